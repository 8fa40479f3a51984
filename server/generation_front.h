// What every front end (tcm.v1 and the Open Inference Protocol) does with a
// call once it is validated: count it, look its images up in the response
// cache, queue the rest and let the call's RequestState report through the
// front end's ResponseSink. Both front ends thereby submit to the same queue
// under the same rules, so the same request yields the same pixels on either.
// Torch-free and thread-safe.
#ifndef TCM_SERVER_GENERATION_FRONT_H_
#define TCM_SERVER_GENERATION_FRONT_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/access_log.h"
#include "server/generation_queue.h"
#include "server/metrics.h"
#include "server/open_call_limit.h"
#include "server/request_state.h"
#include "server/request_validation.h"
#include "server/response_cache.h"
#include "server/served_model.h"

namespace tcm {

class GenerationFront {
 public:
  struct Options {
    int default_model = 0;  // index into the model list
    ValidationLimits limits;
    // Seeded calls of cacheable models look their images up here first and
    // cache what they compute; nullptr = no cache. Must outlive the front.
    ResponseCache* cache = nullptr;
    // Calls started with a `call` key leave their GenerationSummary here
    // before their sink's OnFinish; nullptr = no access log.
    AccessLog* access_log = nullptr;
    // The served models, shared by every front end and changed by model
    // control; null = a fixed table of the constructor's `models` (slots
    // 0..n-1, default `default_model`).
    std::shared_ptr<ModelCatalog> catalog;
    // Shared by every front end: a call beyond its bound is refused
    // RESOURCE_EXHAUSTED; null = no bound.
    std::shared_ptr<OpenCallLimit> open_calls;
  };

  // `models`: the served models, in the order of their metrics and queue
  // indices (unused with options.catalog). `queue` and `metrics` must
  // outlive the front.
  GenerationFront(const Options& options, std::vector<ServedModel> models, GenerationQueue* queue,
                  ServerMetrics* metrics);

  // The models served now. Keep the pointer while using what it holds.
  std::shared_ptr<const ModelTable> models() const { return catalog_->Get(); }
  const ValidationLimits& limits() const { return options_.limits; }

  // A seed for a call that named none: 63 bits, safe in every client language.
  uint64_t FreshSeed();

  // Starts the validated call `spec`, received at `start`, with results
  // going to `sink` (which gets OnAccepted first, and holds the call's place
  // under options.open_calls until it is destroyed). A refused submission
  // (too many open calls, full queue, draining) finishes the call through
  // `sink`. `call` names
  // the call to the access log (see AccessLog::Annotate); nullptr = none.
  void Start(GenerationSpec spec, ResponseSink* sink, absl::Time start, absl::Time deadline,
             const void* call = nullptr);

  // Counts a call refused before it was queued (see ServerMetrics::RequestRejected);
  // an empty `model` is the default model.
  void CountRejected(const std::string& model, unsigned steps, const absl::Status& status);

 private:
  const Options options_;
  const std::shared_ptr<ModelCatalog> catalog_;
  GenerationQueue* const queue_;
  ServerMetrics* const metrics_;
  absl::Mutex seed_mu_;
  std::mt19937_64 seed_source_ ABSL_GUARDED_BY(seed_mu_);
};

}  // namespace tcm

#endif  // TCM_SERVER_GENERATION_FRONT_H_
