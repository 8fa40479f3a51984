// The tcm.v1.TcmService implementation (gRPC callback API): validates calls,
// hands them to a GenerationQueue, and answers from the results it reports
// through each call's RequestState. Torch-free.
#ifndef TCM_SERVER_TCM_SERVICE_H_
#define TCM_SERVER_TCM_SERVICE_H_

#include <atomic>
#include <random>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "server/generation_queue.h"
#include "server/metrics.h"
#include "server/request_validation.h"
#include "server/response_cache.h"
#include "server/served_model.h"
#include "tcm/v1/tcm_service.grpc.pb.h"

namespace tcm {

class TcmServiceImpl final : public v1::TcmService::CallbackService {
 public:
  struct Options {
    int default_model = 0;  // index into the model list
    ValidationLimits limits;
    // Seeded calls of cacheable models look their images up here first and
    // cache what they compute; nullptr = no cache. Must outlive the service.
    ResponseCache* cache = nullptr;
  };

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

 private:
  // Validates `request` and submits its images with results going to `sink`.
  // A bad request is returned as an error (the caller finishes the call); a
  // rejected submission finishes the call through `sink`.
  absl::Status Start(grpc::CallbackServerContext* context, const v1::GenerateRequest& request, ResponseSink* sink);
  uint64_t FreshSeed();

  const Options options_;
  GenerationQueue* const queue_;
  ServerMetrics* const metrics_;
  std::vector<ServedModel> served_;
  v1::ListModelsResponse model_list_;
  absl::Mutex seed_mu_;
  std::mt19937_64 seed_source_ ABSL_GUARDED_BY(seed_mu_);
};

}  // namespace tcm

#endif  // TCM_SERVER_TCM_SERVICE_H_
