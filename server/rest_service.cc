#include "server/rest_service.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <future>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/image_grid.h"
#include "common/png_encoder.h"
#include "google/protobuf/util/json_util.h"
#include "server/image_line_stream.h"
#include "server/inference_mapping.h"
#include "server/metrics_endpoint.h"
#include "server/page_policy.h"
#include "server/playground.h"
#include "server/request_validation.h"
#include "server/rest_json.h"

namespace tcm {
namespace {

// Collects one infer call's images and hands the outcome to a waiting thread.
// Deletes itself in OnFinish, the last thing RequestState does with a sink, so
// the waiter never races its destruction.
struct CallOutcome {
  absl::Status status;
  GenerationSpec spec;
  std::vector<v1::Image> images;  // in completion order
};

class BlockingSink : public ResponseSink {
 public:
  std::future<CallOutcome> outcome() { return promise_.get_future(); }
  // The call once accepted (for cancelling it); may outlive the sink.
  std::shared_ptr<std::weak_ptr<RequestState>> call() const { return call_; }

  void OnAccepted(const std::shared_ptr<RequestState>& state) override {
    outcome_.spec = state->spec();
    *call_ = state;  // before the call is queued: no other thread knows the sink yet
  }
  bool DeliversEachImage() const override { return false; }
  void OnImage(v1::Image image) override { outcome_.images.push_back(std::move(image)); }
  void OnFinish(const absl::Status& status, const v1::Timings&) override {
    outcome_.status = status;
    promise_.set_value(std::move(outcome_));
    delete this;
  }

 private:
  CallOutcome outcome_;
  std::promise<CallOutcome> promise_;
  const std::shared_ptr<std::weak_ptr<RequestState>> call_ = std::make_shared<std::weak_ptr<RequestState>>();
};

HttpResponse Json(std::string body) { return HttpResponse{200, "application/json", std::move(body)}; }

HttpResponse Error(const absl::Status& status) {
  return JsonError(HttpStatusOf(status.code()), std::string(status.message()));
}

// Runs the validated call `spec` through `front` to its end, on the calling thread.
// The access log knows the call as `request`. A caller that closes its
// connection meanwhile cancels the call (noticed within 50 ms), as a
// cancelled gRPC call is: its queued images are dropped, not computed.
CallOutcome RunToEnd(GenerationFront& front, GenerationSpec spec, absl::Time start, const HttpRequest& request) {
  auto* sink = new BlockingSink();  // deletes itself when the call ends
  std::future<CallOutcome> outcome = sink->outcome();
  const std::shared_ptr<std::weak_ptr<RequestState>> call = sink->call();
  front.Start(std::move(spec), sink, start, absl::InfiniteFuture(), &request);
  bool cancelled = false;
  while (outcome.wait_for(std::chrono::milliseconds(50)) != std::future_status::ready) {
    if (cancelled || !request.caller_gone || !request.caller_gone()) continue;
    if (std::shared_ptr<RequestState> state = call->lock()) state->Cancel();
    cancelled = true;
  }
  return outcome.get();
}

// The integer query value `name` of `query` within [low, high], or `fallback` when absent.
absl::StatusOr<int64_t> QueryInteger(const std::map<std::string, std::string>& query, const std::string& name,
                                     int64_t low, int64_t high, int64_t fallback) {
  const auto it = query.find(name);
  if (it == query.end()) return fallback;
  int64_t value = 0;
  if (!absl::SimpleAtoi(it->second, &value) || value < low || value > high) {
    const bool any = low == INT64_MIN && high == INT64_MAX;  // the range is checked later
    return absl::InvalidArgumentError(absl::StrCat("query '", name, "': must be an integer",
                                                   any ? "" : absl::StrCat(" in [", low, ", ", high, "]"), ", got '",
                                                   it->second, "'"));
  }
  return value;
}

// `status` of a generate or stream call, its message naming the query's
// keys where the validation of tcm.v1's request names that request's fields.
absl::Status QueryError(absl::Status status) {
  status = RestateField(status, "num_images", "query 'num': ");
  status = RestateField(status, "steps", "query 'steps': ");
  status = RestateField(status, "class_label", "query 'class': ");
  return absl::Status(status.code(),
                      absl::StrReplaceAll(status.message(), {{"leave class_label unset", "leave class out"}}));
}

}  // namespace

RestService::RestService(const GenerationFront::Options& options, std::vector<ServedModel> models,
                         GenerationQueue* queue, ServerMetrics* metrics, Readiness ready,
                         std::shared_ptr<prometheus::Registry> registry)
    : front_(options, std::move(models), queue, metrics),
      ready_(std::move(ready)),
      registry_(std::move(registry)),
      playground_policy_(PageContentSecurityPolicy(PlaygroundHtml())) {}

HttpResponse RestService::Handle(const HttpRequest& request) {
  if (registry_ != nullptr)
    if (auto metrics = MetricsEndpoint(*registry_, request)) return *std::move(metrics);
  const std::vector<std::string> parts = absl::StrSplit(request.path, '/');  // "", "v2", ...
  const bool get = request.method == "GET" || request.method == "HEAD";
  auto wrong_method = [&](const char* allowed) {
    return MethodNotAllowed(request, std::string(allowed) == "GET" ? "GET, HEAD" : allowed);
  };
  if (request.path == "/") {
    if (!get) return wrong_method("GET");
    HttpResponse page{200, "text/html; charset=utf-8", std::string(PlaygroundHtml())};
    page.headers = {{"Content-Security-Policy", playground_policy_}};
    return page;
  }
  if (request.path == "/v1/models") {
    if (!get) return wrong_method("GET");
    return Json(ModelListJson());  // the models served now: model control changes them
  }
  if (parts.size() == 5 && parts[0].empty() && parts[1] == "v1" && parts[2] == "models" &&
      (parts[4] == "generate" || parts[4] == "stream")) {
    if (!get) return wrong_method("GET");
    if (request.method == "HEAD") return HeadOfGeneration(request, parts[3], /*stream=*/parts[4] == "stream");
    return parts[4] == "generate" ? GeneratePng(request, parts[3]) : GenerateLines(request, parts[3]);
  }
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
      const std::shared_ptr<const ModelTable> table = front_.models();  // holds what `model` points into
      absl::StatusOr<const ServedModel*> model = FindInferenceModel(table->models, table->default_model, name, version);
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
        return Infer(request, name, version);
      }
    }
  }
  return JsonError(404, absl::StrCat("no endpoint ", request.path,
                                     " (known: /v2, /v2/health/live, /v2/health/ready, /v2/models/{model}, "
                                     "/v2/models/{model}/ready, /v2/models/{model}/infer)"));
}

HttpResponse RestService::Infer(const HttpRequest& http, const std::string& model, const std::string& version) {
  const absl::Time start = absl::Now();
  if (http.headers.count("inference-header-content-length")) {
    const absl::Status refused = absl::InvalidArgumentError(
        "Inference-Header-Content-Length: the binary tensor data extension is not supported; send the "
        "inputs as JSON \"data\" (the Triton client: binary_data=False)");
    front_.CountRejected(model, 0, refused);
    return Error(refused);
  }
  absl::StatusOr<inference::ModelInferRequest> request = InferRequestFromJson(model, version, http.body);
  const std::shared_ptr<const ModelTable> table = front_.models();
  absl::StatusOr<GenerationSpec> spec =
      request.ok()
          ? SpecFromInferRequest(*request, table->models, table->default_model, front_.limits(), front_.FreshSeed())
          : absl::StatusOr<GenerationSpec>(request.status());
  if (spec.ok()) spec->table = table;
  if (!spec.ok()) {
    front_.CountRejected(model, 0, spec.status());
    return Error(spec.status());
  }
  CallOutcome done = RunToEnd(front_, *std::move(spec), start, http);
  if (!done.status.ok()) return Error(done.status);
  absl::StatusOr<inference::ModelInferResponse> response = InferResponseFromImages(*request, done.spec, done.images);
  if (!response.ok()) return Error(response.status());
  return Json(InferResponseToJson(*response));
}

std::string RestService::ModelListJson() const {
  v1::ListModelsResponse list = ModelList(*front_.models());
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  if (!google::protobuf::util::MessageToJsonString(list, &json, options).ok()) return "{\"models\": []}";
  // ListModels' fields, and the most images one call may ask for.
  json.pop_back();  // the closing brace
  return absl::StrCat(json, ",\"max_images_per_request\":", front_.limits().max_images_per_request, "}");
}

absl::StatusOr<GenerationSpec> RestService::SpecFromQuery(const HttpRequest& http, const std::string& model,
                                                          v1::ImageFormat format, bool stream, bool count_refusal) {
  const std::map<std::string, std::string>& query = http.query;
  const char* known = stream ? "class, steps, seed, num, preview" : "class, steps, seed, num";
  for (const auto& [name, value] : query)
    if (name != "class" && name != "steps" && name != "seed" && name != "num" && !(stream && name == "preview"))
      return absl::InvalidArgumentError(absl::StrCat("query '", name, "': unknown (known: ", known, ")"));
  v1::GenerateRequest request;
  request.set_model(model);
  request.set_format(format);
  absl::StatusOr<int64_t> label = QueryInteger(query, "class", INT64_MIN, INT64_MAX, -1);
  absl::StatusOr<int64_t> steps = QueryInteger(query, "steps", 0, 2, 0);
  const std::shared_ptr<const ModelTable> table = front_.models();
  absl::StatusOr<int64_t> num = QueryInteger(query, "num", 1, UINT32_MAX, 1);
  if (!num.ok()) {
    // The range that applies: the model's (--max_images_per_request, or its
    // own cap where smaller); an unknown model is answered 404 below, after
    // the query's values are integers at all.
    const ServedModel* target = model.empty() ? table->Default() : nullptr;
    for (const ServedModel& m : table->models)
      if (!model.empty() && m.name == model) target = &m;
    bool model_caps = false;
    const unsigned most = target != nullptr ? MaxImagesPerCall(*target, front_.limits(), &model_caps)
                                            : front_.limits().max_images_per_request;
    num = absl::InvalidArgumentError(absl::StrCat("query 'num': must be an integer in [1, ", most, "]",
                                                  model_caps ? absl::StrCat(" for model '", target->name, "'") : "",
                                                  ", got '", query.at("num"), "'"));
  }
  absl::StatusOr<int64_t> seed = QueryInteger(query, "seed", 0, INT64_MAX, -1);
  absl::StatusOr<int64_t> preview = QueryInteger(query, "preview", 0, 1, 0);
  for (const auto* value : {&label, &steps, &num, &seed, &preview})
    if (!value->ok()) return value->status();
  if (query.count("class")) request.set_class_label(*label);
  if (query.count("seed")) request.set_seed(static_cast<uint64_t>(*seed));
  request.set_steps(static_cast<uint32_t>(*steps));
  request.set_num_images(static_cast<uint32_t>(*num));
  request.set_preview(*preview == 1);
  absl::StatusOr<GenerationSpec> spec =
      ValidateRequest(request, table->models, table->default_model, front_.limits(), front_.FreshSeed());
  if (spec.ok()) spec->table = table;
  if (!spec.ok()) {
    if (count_refusal) front_.CountRejected(model, static_cast<unsigned>(*steps), spec.status());
    return QueryError(spec.status());
  }
  return spec;
}

HttpResponse RestService::HeadOfGeneration(const HttpRequest& http, const std::string& model, bool stream) {
  absl::StatusOr<GenerationSpec> spec =
      SpecFromQuery(http, model, stream ? v1::IMAGE_FORMAT_PNG : v1::IMAGE_FORMAT_RAW, stream, /*count_refusal=*/false);
  if (!spec.ok()) return Error(spec.status());
  return HttpResponse{200, stream ? "application/x-ndjson" : "image/png", ""};
}

HttpResponse RestService::GenerateLines(const HttpRequest& http, const std::string& model) {
  const absl::Time start = absl::Now();
  absl::StatusOr<GenerationSpec> spec = SpecFromQuery(http, model, v1::IMAGE_FORMAT_PNG, /*stream=*/true);
  if (!spec.ok()) return Error(spec.status());
  auto channel = std::make_shared<ImageLineChannel>();
  front_.Start(*std::move(spec), new ImageLineSink(channel), start, absl::InfiniteFuture(), &http);
  if (absl::Status refused; channel->EndedWithoutImages(&refused) && !refused.ok()) return Error(refused);
  HttpResponse response{200, "application/x-ndjson", ""};
  response.stream = std::make_unique<ImageLineBody>(std::move(channel), http.caller_gone);
  response.headers = {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}};  // no proxy holds lines back
  return response;
}

HttpResponse RestService::GeneratePng(const HttpRequest& http, const std::string& model) {
  const absl::Time start = absl::Now();
  absl::StatusOr<GenerationSpec> spec = SpecFromQuery(http, model, v1::IMAGE_FORMAT_RAW, /*stream=*/false);
  if (!spec.ok()) return Error(spec.status());
  CallOutcome done = RunToEnd(front_, *std::move(spec), start, http);
  if (!done.status.ok()) return Error(done.status);
  std::sort(done.images.begin(), done.images.end(),
            [](const v1::Image& a, const v1::Image& b) { return a.index() < b.index(); });
  const v1::Image& first = done.images.at(0);
  const int width = static_cast<int>(first.width()), height = static_cast<int>(first.height());
  const int channels = static_cast<int>(first.channels());
  std::vector<const uint8_t*> pixels;
  for (const v1::Image& image : done.images) {
    if (image.data().size() != size_t(width) * height * channels)
      return JsonError(500, absl::StrCat("image ", image.index(), " has ", image.data().size(), " bytes, not ",
                                         size_t(width) * height * channels));
    pixels.push_back(reinterpret_cast<const uint8_t*>(image.data().data()));
  }
  const int columns = SquareGridColumns(static_cast<int>(pixels.size()));
  const int rows = (static_cast<int>(pixels.size()) + columns - 1) / columns;
  const std::string grid = TileImages(pixels, width, height, channels, columns);
  absl::StatusOr<std::string> png =
      EncodePng(reinterpret_cast<const uint8_t*>(grid.data()), width * columns, height * rows, channels);
  if (!png.ok()) return Error(png.status());
  return HttpResponse{200, "image/png", *std::move(png)};
}

}  // namespace tcm
