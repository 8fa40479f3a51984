// The seam between the gRPC service and the workers. The service hands over
// a validated request; the worker side turns it into per-image work, keeps
// each image's sampling-step state, and reports every finished image (or the
// failure) through the request's RequestState. Torch-free.
#ifndef TCM_SERVER_GENERATION_QUEUE_H_
#define TCM_SERVER_GENERATION_QUEUE_H_

#include <memory>

#include "absl/status/status.h"
#include "server/request_state.h"

namespace tcm {

class GenerationQueue {
 public:
  virtual ~GenerationQueue() = default;

  // Queues every image of `request` to compute (its indices_to_compute(),
  // possibly none), all or none, calling request->Queued()
  // before any image can be reported. RESOURCE_EXHAUSTED when its model's
  // queue cannot take them, UNAVAILABLE once the server is draining: then
  // nothing was queued and the caller fails the request.
  virtual absl::Status Submit(const std::shared_ptr<RequestState>& request) = 0;
};

}  // namespace tcm

#endif  // TCM_SERVER_GENERATION_QUEUE_H_
