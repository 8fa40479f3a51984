// The tcm.v1.TcmService implementation (gRPC callback API): validates calls,
// starts them through a GenerationFront (cache, queue), and answers from the
// results reported through each call's RequestState. Torch-free.
#ifndef TCM_SERVER_TCM_SERVICE_H_
#define TCM_SERVER_TCM_SERVICE_H_

#include <string>
#include <vector>

#include "server/generation_front.h"
#include "server/model_control_api.h"
#include "tcm/v1/tcm_service.grpc.pb.h"

namespace tcm {

class TcmServiceImpl final : public v1::TcmService::CallbackService {
 public:
  using Options = GenerationFront::Options;

  // `models`: the served models, in the order of their metrics and queue
  // indices. `queue` and `metrics` must outlive the service.
  TcmServiceImpl(const Options& options, std::vector<ServedModel> models, GenerationQueue* queue,
                 ServerMetrics* metrics);

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context, const v1::GenerateRequest* request,
                                     v1::GenerateResponse* response) override;
  grpc::ServerWriteReactor<v1::GenerateStreamResponse>* GenerateStream(grpc::CallbackServerContext* context,
                                                                       const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context, const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* LoadModel(grpc::CallbackServerContext* context, const v1::LoadModelRequest* request,
                                      v1::LoadModelResponse* response) override;
  grpc::ServerUnaryReactor* UnloadModel(grpc::CallbackServerContext* context, const v1::UnloadModelRequest* request,
                                        v1::UnloadModelResponse* response) override;

  // LoadModel and UnloadModel go to `control` when `mode` (--model_control)
  // is explicit; otherwise they fail FAILED_PRECONDITION naming the mode.
  // Call before the server starts; `control` must outlive the service.
  void SetModelControl(const std::string& mode, ModelControlApi* control) {
    control_mode_ = mode;
    control_ = control;
  }

 private:
  // Validates `request` and submits its images with results going to `sink`.
  // A bad request is returned as an error (the caller finishes the call); a
  // rejected submission finishes the call through `sink`.
  absl::Status Start(grpc::CallbackServerContext* context, const v1::GenerateRequest& request, ResponseSink* sink);

  // The control for LoadModel and UnloadModel, or why there is none.
  absl::Status ModelControlFor(const char* method) const;

  GenerationFront front_;
  std::string control_mode_ = "none";
  ModelControlApi* control_ = nullptr;
};

}  // namespace tcm

#endif  // TCM_SERVER_TCM_SERVICE_H_
