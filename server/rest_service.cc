#include "server/rest_service.h"

#include <future>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "server/inference_mapping.h"
#include "server/metrics_endpoint.h"
#include "server/rest_json.h"

namespace tcm {
namespace {

// Collects one infer call's images and hands the outcome to a waiting thread.
// Deletes itself in OnFinish, the last thing RequestState does with a sink, so
// the waiter never races its destruction.
class BlockingSink : public ResponseSink {
 public:
  struct Outcome {
    absl::Status status;
    GenerationSpec spec;
    std::vector<v1::Image> images;
  };

  std::future<Outcome> outcome() { return promise_.get_future(); }

  void OnAccepted(const std::shared_ptr<RequestState>& state) override { outcome_.spec = state->spec(); }
  bool DeliversEachImage() const override { return false; }
  void OnImage(v1::Image image) override { outcome_.images.push_back(std::move(image)); }
  void OnFinish(const absl::Status& status, const v1::Timings&) override {
    outcome_.status = status;
    promise_.set_value(std::move(outcome_));
    delete this;
  }

 private:
  Outcome outcome_;
  std::promise<Outcome> promise_;
};

HttpResponse Json(std::string body) { return HttpResponse{200, "application/json", std::move(body)}; }

HttpResponse Error(const absl::Status& status) {
  return JsonError(HttpStatusOf(status.code()), std::string(status.message()));
}

}  // namespace

RestService::RestService(const GenerationFront::Options& options, std::vector<ServedModel> models,
                         GenerationQueue* queue, ServerMetrics* metrics, Readiness ready,
                         std::shared_ptr<prometheus::Registry> registry)
    : front_(options, std::move(models), queue, metrics), ready_(std::move(ready)), registry_(std::move(registry)) {}

HttpResponse RestService::Handle(const HttpRequest& request) {
  if (registry_ != nullptr)
    if (auto metrics = MetricsEndpoint(*registry_, request)) return *std::move(metrics);
  const std::vector<std::string> parts = absl::StrSplit(request.path, '/');  // "", "v2", ...
  const bool get = request.method == "GET" || request.method == "HEAD";
  auto wrong_method = [&](const char* allowed) {
    return JsonError(405, absl::StrCat(request.path, " answers ", allowed, " only, got ", request.method));
  };
  if (parts.size() < 2 || parts[0] != "" || parts[1] != "v2")
    return JsonError(404, absl::StrCat("no endpoint ", request.path, " (the Open Inference Protocol's are under /v2)"));
  if (parts.size() == 2) {
    if (!get) return wrong_method("GET");
    inference::ServerMetadataResponse metadata;
    metadata.set_name("tcm-serve");
    metadata.set_version(TCM_SERVE_VERSION);
    return Json(ServerMetadataToJson(metadata));
  }
  if (parts.size() == 4 && parts[2] == "health" && (parts[3] == "live" || parts[3] == "ready")) {
    if (!get) return wrong_method("GET");
    if (parts[3] == "live") return Json("{\"live\": true}");
    if (!ready_("")) return JsonError(503, "not ready: warming up or draining");
    return Json("{\"ready\": true}");
  }
  if (parts.size() >= 4 && parts[2] == "models") {
    // /v2/models/{m}[/versions/{v}][/ready|/infer]
    const std::string& name = parts[3];
    size_t next = 4;
    std::string version;
    if (parts.size() >= 6 && parts[4] == "versions") {
      version = parts[5];
      next = 6;
    }
    const std::string action = parts.size() == next + 1 ? parts[next] : "";
    if (parts.size() <= next + 1 && !name.empty()) {
      absl::StatusOr<const ServedModel*> model =
          FindInferenceModel(front_.models(), front_.default_model(), name, version);
      if (!model.ok()) return Error(model.status());
      if (action.empty()) {
        if (!get) return wrong_method("GET");
        return Json(ModelMetadataToJson(ModelMetadataOf(**model)));
      }
      if (action == "ready") {
        if (!get) return wrong_method("GET");
        if (!ready_((*model)->name)) return JsonError(503, absl::StrCat("model '", name, "' is not ready"));
        return Json("{\"ready\": true}");
      }
      if (action == "infer") {
        if (request.method != "POST") return wrong_method("POST");
        return Infer(name, version, request.body);
      }
    }
  }
  return JsonError(404, absl::StrCat("no endpoint ", request.path,
                                     " (known: /v2, /v2/health/live, /v2/health/ready, /v2/models/{model}, "
                                     "/v2/models/{model}/ready, /v2/models/{model}/infer)"));
}

HttpResponse RestService::Infer(const std::string& model, const std::string& version, const std::string& body) {
  const absl::Time start = absl::Now();
  absl::StatusOr<inference::ModelInferRequest> request = InferRequestFromJson(model, version, body);
  absl::StatusOr<GenerationSpec> spec =
      request.ok()
          ? SpecFromInferRequest(*request, front_.models(), front_.default_model(), front_.limits(), front_.FreshSeed())
          : absl::StatusOr<GenerationSpec>(request.status());
  if (!spec.ok()) {
    front_.CountRejected(model, 0, spec.status());
    return Error(spec.status());
  }
  auto* sink = new BlockingSink();  // deletes itself when the call ends
  std::future<BlockingSink::Outcome> outcome = sink->outcome();
  front_.Start(*std::move(spec), sink, start, absl::InfiniteFuture());
  BlockingSink::Outcome done = outcome.get();
  if (!done.status.ok()) return Error(done.status);
  absl::StatusOr<inference::ModelInferResponse> response = InferResponseFromImages(*request, done.spec, done.images);
  if (!response.ok()) return Error(response.status());
  return Json(InferResponseToJson(*response));
}

}  // namespace tcm
