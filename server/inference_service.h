// inference.GRPCInferenceService, the Open Inference Protocol's gRPC form
// (gRPC callback API), on the same port as tcm.v1. Health and metadata
// answer from what the server serves; ModelInfer maps the request onto a
// generation (inference_mapping.h) and submits it through a GenerationFront
// to the same queue as tcm.v1, so both front ends give the same pixels.
// Torch-free.
#ifndef TCM_SERVER_INFERENCE_SERVICE_H_
#define TCM_SERVER_INFERENCE_SERVICE_H_

#include <functional>
#include <string>
#include <vector>

#include "inference/grpc_predict_v2.grpc.pb.h"
#include "server/generation_front.h"

namespace tcm {

inline constexpr char kInferenceServerName[] = "tcm-serve";

class InferenceServiceImpl final : public inference::GRPCInferenceService::CallbackService {
 public:
  // Whether `name` ("" = the server as a whole, else a model) is ready to
  // serve: the health service's SERVING.
  using Readiness = std::function<bool(const std::string& name)>;

  // As TcmServiceImpl: `models` in the order of their metrics and queue
  // indices; `queue` and `metrics` must outlive the service.
  InferenceServiceImpl(const GenerationFront::Options& options, std::vector<ServedModel> models, GenerationQueue* queue,
                       ServerMetrics* metrics, Readiness ready);

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context, const inference::ServerLiveRequest*,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context, const inference::ServerReadyRequest*,
                                        inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const inference::ServerMetadataRequest*,
                                           inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* context,
                                       const inference::ModelInferRequest* request,
                                       inference::ModelInferResponse* response) override;

 private:
  GenerationFront front_;
  const Readiness ready_;
};

}  // namespace tcm

#endif  // TCM_SERVER_INFERENCE_SERVICE_H_
