#include "server/inference_service.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "server/access_log_hooks.h"
#include "server/inference_mapping.h"
#include "server/status_util.h"

namespace tcm {
namespace {

grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* context, const absl::Status& status) {
  auto* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// ModelInfer: collects every raw image, answers once with the `image` tensor.
// RequestState serialises OnAccepted, OnImage and OnFinish; Finish() is the
// last thing each path does (gRPC may delete the reactor right after).
class InferReactor : public grpc::ServerUnaryReactor, public ResponseSink {
 public:
  InferReactor(const inference::ModelInferRequest* request, inference::ModelInferResponse* response)
      : request_(request), response_(response) {}

  void OnAccepted(const std::shared_ptr<RequestState>& state) override {
    spec_ = state->spec();
    state_ = state;
  }
  bool DeliversEachImage() const override { return false; }
  void OnImage(v1::Image image) override { images_.push_back(std::move(image)); }

  void OnFinish(const absl::Status& status, const v1::Timings&) override {
    // The spec leaves the reactor here: a caller slow to take its answer
    // must not keep the model table it names (and an unloaded version) alive.
    const GenerationSpec spec = std::move(spec_);
    if (!status.ok()) {
      Finish(ToGrpcStatus(status));
      return;
    }
    absl::StatusOr<inference::ModelInferResponse> response = InferResponseFromImages(*request_, spec, images_);
    images_.clear();
    if (!response.ok()) {
      Finish(ToGrpcStatus(response.status()));
      return;
    }
    *response_ = *std::move(response);
    Finish(grpc::Status::OK);
  }

  void OnCancel() override {
    if (auto state = state_.lock()) state->Cancel();
  }
  void OnDone() override { delete this; }

 private:
  const inference::ModelInferRequest* request_;
  inference::ModelInferResponse* response_;
  GenerationSpec spec_;
  std::vector<v1::Image> images_;
  std::weak_ptr<RequestState> state_;
};

}  // namespace

InferenceServiceImpl::InferenceServiceImpl(const GenerationFront::Options& options, std::vector<ServedModel> models,
                                           GenerationQueue* queue, ServerMetrics* metrics, Readiness ready)
    : front_(options, std::move(models), queue, metrics), ready_(std::move(ready)) {}

grpc::ServerUnaryReactor* InferenceServiceImpl::ServerLive(grpc::CallbackServerContext* context,
                                                           const inference::ServerLiveRequest*,
                                                           inference::ServerLiveResponse* response) {
  response->set_live(true);  // it answers
  return Answer(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ServerReady(grpc::CallbackServerContext* context,
                                                            const inference::ServerReadyRequest*,
                                                            inference::ServerReadyResponse* response) {
  response->set_ready(ready_(""));
  return Answer(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ModelReady(grpc::CallbackServerContext* context,
                                                           const inference::ModelReadyRequest* request,
                                                           inference::ModelReadyResponse* response) {
  const std::shared_ptr<const ModelTable> table = front_.models();  // holds what `model` points into
  absl::StatusOr<const ServedModel*> model =
      FindInferenceModel(table->models, table->default_model, request->name(), request->version());
  if (!model.ok()) return Answer(context, model.status());
  response->set_ready(ready_((*model)->name));
  return Answer(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ServerMetadata(grpc::CallbackServerContext* context,
                                                               const inference::ServerMetadataRequest*,
                                                               inference::ServerMetadataResponse* response) {
  response->set_name(kInferenceServerName);
  response->set_version(TCM_SERVE_VERSION);
  return Answer(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ModelMetadata(grpc::CallbackServerContext* context,
                                                              const inference::ModelMetadataRequest* request,
                                                              inference::ModelMetadataResponse* response) {
  const std::shared_ptr<const ModelTable> table = front_.models();  // holds what `model` points into
  absl::StatusOr<const ServedModel*> model =
      FindInferenceModel(table->models, table->default_model, request->name(), request->version());
  if (!model.ok()) return Answer(context, model.status());
  *response = ModelMetadataOf(**model);
  return Answer(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ModelInfer(grpc::CallbackServerContext* context,
                                                           const inference::ModelInferRequest* request,
                                                           inference::ModelInferResponse* response) {
  const absl::Time start = absl::Now();
  auto* reactor = new InferReactor(request, response);
  const std::shared_ptr<const ModelTable> table = front_.models();
  absl::StatusOr<GenerationSpec> spec =
      SpecFromInferRequest(*request, table->models, table->default_model, front_.limits(), front_.FreshSeed());
  if (spec.ok()) spec->table = table;
  if (!spec.ok()) {
    unsigned steps = 0;
    if (auto it = request->parameters().find("steps"); it != request->parameters().end())
      steps = static_cast<unsigned>(it->second.int64_param());
    front_.CountRejected(request->model_name(), steps, spec.status());
    reactor->Finish(ToGrpcStatus(spec.status()));
    return reactor;
  }
  front_.Start(*std::move(spec), reactor, start, CallDeadline(*context), AccessLogKey(context));
  return reactor;
}

}  // namespace tcm
