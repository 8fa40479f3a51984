// The server's Prometheus metrics: families built once on one registry, and
// per-model labelled children handed out by ModelMetrics.
#ifndef TCM_SERVER_METRICS_H_
#define TCM_SERVER_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "server/served_model.h"

namespace tcm {

// The tcm_queue_depth series of one model name, shared by its versions:
// each level's gauge holds the sum of the versions' queues at that level.
struct QueueDepths {
  std::mutex mu;
  std::map<int, std::vector<size_t>> by_slot;  // version's index -> depth by level (index 0 unused); guarded by mu
  std::vector<prometheus::Gauge*> gauges;      // by level (index 0 unused); null: no version has it; guarded by mu
};

// Metrics of one model; every member is safe to use from any thread.
class ModelMetrics {
 public:
  void RequestFinished(unsigned steps, const std::string& code, double seconds);
  // The image ledger: every image of an accepted call is counted once as
  // accepted, and later once as either generated (handed to its caller) or
  // dropped, with the reason ("cancelled", "deadline", "deadline_unmeetable", "failed" or "shutdown").
  void ImagesAccepted(int count) { accepted_->Increment(count); }
  void ImagesGenerated(unsigned steps, int count);
  void ImagesDropped(const std::string& reason, int count);
  void Batch(int size, double compute_seconds);
  // By priority level, 1..the model's priority_levels.
  void QueueWait(int level, double seconds) { queue_wait_.at(level)->Observe(seconds); }
  // This version's queue at `level`; the model's tcm_queue_depth series
  // shows the sum over its versions still holding a queue (a reload's old
  // version draining beside the new one), so neither hides the other.
  void SetQueueDepth(int level, size_t depth);
  void RequestStarted() { in_flight_->Increment(); }
  void ClientCancelled() { client_cancellations_->Increment(); }
  // Images of seeded calls looked up in the response cache.
  void CacheHits(int count) { cache_hits_->Increment(count); }
  void CacheMisses(int count) { cache_misses_->Increment(count); }
  void RequestEnded() { in_flight_->Decrement(); }

 private:
  friend class ServerMetrics;
  std::string model_;
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  prometheus::Family<prometheus::Histogram>* latency_ = nullptr;
  prometheus::Family<prometheus::Counter>* images_ = nullptr;
  prometheus::Family<prometheus::Counter>* dropped_ = nullptr;
  prometheus::Counter* accepted_ = nullptr;
  std::vector<prometheus::Histogram*> queue_wait_;  // by priority level (index 0 unused)
  prometheus::Histogram* batch_compute_ = nullptr;
  prometheus::Histogram* batch_size_ = nullptr;
  std::shared_ptr<QueueDepths> queue_depths_;  // shared by the model's versions
  int slot_ = 0;                               // this version's index
  prometheus::Gauge* in_flight_ = nullptr;
  prometheus::Counter* client_cancellations_ = nullptr;
  prometheus::Counter* cache_hits_ = nullptr;
  prometheus::Counter* cache_misses_ = nullptr;
  prometheus::Labels info_labels_;     // its tcm_model_info series
  prometheus::Gauge* info_ = nullptr;  // null while hidden (ServerMetrics guards it)
};

class ServerMetrics {
 public:
  // One set of per-model metrics for each of `models` at index i (their
  // order), each shown in tcm_model_info.
  explicit ServerMetrics(const std::vector<ServedModel>& models);

  // Metrics for the model version at index `model.slot` (its batcher
  // index; indices of versions that never served stay empty). A version of
  // a model already added shares that model's series. Not yet in
  // tcm_model_info: see ShowModelInfo.
  void AddModel(const ServedModel& model);
  // Puts the version at `index` into tcm_model_info, or takes it out (its
  // other series stay: counters never go back).
  void ShowModelInfo(int index);
  void HideModelInfo(int index);
  // The version at `index` holds no queue any more (its replicas were
  // freed): it leaves its model's tcm_queue_depth sums, and a level that no
  // remaining version of the model has loses its series (every level, once
  // no version of the model is left). Its other series stay.
  void QueueFreed(int index);
  // A model directory that failed to load while serving.
  void ModelLoadFailed(const std::string& name);

  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  // A call refused before it was queued. `model` and `steps` become label
  // values only when valid (else "unknown" / "invalid"; steps 0 counts as
  // the model's default): clients must not be able to create new series.
  template <typename Served>
  void RequestRejected(const std::string& model, unsigned steps, const std::string& code, const Served& served) {
    std::string label = "unknown", steps_label = "invalid";
    for (const auto& m : served) {
      if (m.name != model) continue;
      label = model;
      if (steps == 0) steps = m.default_steps;  // 0 asks for the model's default
    }
    if (steps == 1 || steps == 2) steps_label = std::to_string(steps);
    requests_->Add({{"model", label}, {"steps", steps_label}, {"code", code}}).Increment();
  }
  ModelMetrics& model(int index);
  // Bytes the response cache holds.
  void SetCacheBytes(size_t bytes) { cache_bytes_->Set(static_cast<double>(bytes)); }
  // Seconds worker `index` spent running batches.
  prometheus::Counter& worker_busy(int index) { return busy_->Add({{"worker", std::to_string(index)}}); }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  prometheus::Family<prometheus::Histogram>* latency_ = nullptr;
  prometheus::Family<prometheus::Counter>* images_ = nullptr;
  prometheus::Family<prometheus::Counter>* accepted_ = nullptr;
  prometheus::Family<prometheus::Counter>* dropped_ = nullptr;
  prometheus::Family<prometheus::Histogram>* queue_wait_ = nullptr;
  prometheus::Family<prometheus::Histogram>* batch_compute_ = nullptr;
  prometheus::Family<prometheus::Histogram>* batch_size_ = nullptr;
  prometheus::Family<prometheus::Gauge>* queue_depth_ = nullptr;
  prometheus::Family<prometheus::Gauge>* in_flight_ = nullptr;
  prometheus::Family<prometheus::Counter>* cancellations_ = nullptr;
  prometheus::Family<prometheus::Gauge>* info_ = nullptr;
  prometheus::Family<prometheus::Counter>* cache_hits_ = nullptr;
  prometheus::Family<prometheus::Counter>* cache_misses_ = nullptr;
  prometheus::Family<prometheus::Counter>* load_failures_ = nullptr;
  std::mutex mu_;                                      // guards models_ (and each ModelMetrics' info_), depths_
  std::vector<std::unique_ptr<ModelMetrics>> models_;  // unique_ptr: references stay valid as it grows
  std::map<std::string, std::shared_ptr<QueueDepths>> depths_;  // by model name
  prometheus::Family<prometheus::Counter>* busy_ = nullptr;
  prometheus::Gauge* cache_bytes_ = nullptr;
};

}  // namespace tcm

#endif  // TCM_SERVER_METRICS_H_
