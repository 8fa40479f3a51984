// Step-level dynamic batcher: queues single images (one sampling step each)
// per model and hands whole batches to workers.
//
// - A request of k images is submitted as k tasks, all or none: a queue that
//   cannot take them all answers RESOURCE_EXHAUSTED at once.
// - A batch takes up to max_batch_size tasks of one model. It forms as soon as
//   that many are queued, or when the oldest has waited max_queue_delay.
// - A task coming back for its next step (Resubmit) goes ahead of new work
//   and keeps its original arrival time, so it never waits for a batch to fill:
//   items at their first and second step share forward passes.
// - Tasks carry a kind (the server: their request's step count). Tasks of
//   different kinds share batches; with mix_kinds off each batch holds one
//   kind, as if every kind had a batcher of its own.
// - Tasks whose request was cancelled or whose deadline passed are removed
//   when a batch forms, before any compute, and told why (Drop).
// - Close() stops new submissions (UNAVAILABLE); NextBatch keeps serving
//   queued and returning work, then returns nullptr once all is done.
//
// Torch-free and thread-safe. Time comes from Options::clock. It locks with
// std::mutex rather than absl::Mutex: ThreadSanitizer cannot follow
// Debian's uninstrumented Abseil through waits, and the batcher's tests run
// under ThreadSanitizer.
#ifndef TCM_SERVER_BATCHER_H_
#define TCM_SERVER_BATCHER_H_

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/batching_defaults.h"
#include "server/clock.h"

namespace tcm {

// One image at one sampling step. Implemented by the serving layer.
class ImageTask {
 public:
  virtual ~ImageTask() = default;
  // Whether the request no longer wants this image; with the reason.
  virtual absl::Status Abandoned(absl::Time now) const = 0;
  // Called (outside the batcher's lock) when the batcher discards the task.
  virtual void Drop(const absl::Status& why) = 0;

  absl::Time arrival;  // set by Submit; kept across Resubmit
  int kind = 0;        // set by the caller; see ModelQueueOptions::mix_kinds
};

struct Batch {
  int model = 0;  // index into Options::models
  std::vector<std::unique_ptr<ImageTask>> tasks;
  absl::Time formed;
};

class Batcher {
 public:
  struct ModelQueueOptions {
    std::string name;
    size_t max_batch_size = kDefaultMaxBatchSize;  // tasks per batch, >= 1
    // Longest wait for a fuller batch.
    absl::Duration max_queue_delay = absl::Microseconds(kDefaultMaxQueueDelayUs);
    size_t max_queue_size = kDefaultMaxQueueSize;  // queued new tasks before RESOURCE_EXHAUSTED, >= max_batch_size
    // Step-level batching: first and next steps share batches. Off, a batch
    // holds only returning tasks or only new ones.
    bool mix_steps = true;
    // Tasks of different kinds share batches. Off, a batch holds one kind
    // (that of its oldest task); with mix_steps also off this is batching
    // every kind separately, the baseline step-level batching is measured against.
    bool mix_kinds = true;
  };
  struct Options {
    std::vector<ModelQueueOptions> models;
    Clock* clock = nullptr;  // nullptr = RealClock()
    // Called with (model, queued tasks) whenever a queue's length changes,
    // under the batcher's lock: keep it short and do not call the batcher.
    std::function<void(int, size_t)> on_queue_depth;
  };

  static absl::StatusOr<std::unique_ptr<Batcher>> Create(Options options);

  // Queues `tasks` (new images of one request) for `model`, all or none. On
  // success `accepted` (if set) runs under the lock, before any caller of
  // NextBatch can take a task: keep it short and do not call the batcher.
  absl::Status Submit(int model, std::vector<std::unique_ptr<ImageTask>> tasks,
                      const std::function<void()>& accepted = nullptr);

  // Queues a task for its next step, ahead of new work. Never rejected, also
  // after Close(); call it before BatchDone() of the batch it came from.
  void Resubmit(int model, std::unique_ptr<ImageTask> task);

  // Which models a caller runs: serves[m] for model m; empty = every model.
  using ModelSet = std::vector<bool>;

  // Blocks until a batch of a model in `serves` is ready and returns it;
  // nullptr once closed and every queue is empty with no batch in flight.
  std::unique_ptr<Batch> NextBatch(const ModelSet& serves = {});

  // Non-blocking: a batch of a model in `serves` if one is ready at
  // clock->Now(), else nullptr.
  std::unique_ptr<Batch> TryNextBatch(const ModelSet& serves = {});

  // A worker finished a batch from NextBatch/TryNextBatch (after resubmitting).
  void BatchDone();

  // Stops accepting new submissions; queued work still drains.
  void Close();

  // Tasks waiting in `model`'s queue (new and returning).
  size_t QueueDepth(int model) const;

  // Most new tasks `model`'s queue holds (ModelQueueOptions::max_queue_size).
  size_t MaxQueueSize(int model) const { return queues_.at(model)->options.max_queue_size; }

 private:
  struct Queue {
    ModelQueueOptions options;
    std::deque<std::unique_ptr<ImageTask>> returning;  // next steps, served first
    std::deque<std::unique_ptr<ImageTask>> fresh;      // first steps
  };

  explicit Batcher(Options options);

  // Forms a batch of a model in `serves` if one is ready at `now`; abandoned
  // tasks (of any model) go to `dropped`. The helpers below need mu_ held.
  std::unique_ptr<Batch> FormBatch(absl::Time now, const ModelSet& serves,
                                   std::vector<std::pair<std::unique_ptr<ImageTask>, absl::Status>>* dropped);
  // Earliest time at which a non-empty queue in `serves` becomes ready by waiting.
  absl::Time NextReadyTime(const ModelSet& serves) const;
  static bool Serves(const ModelSet& serves, size_t model) { return serves.empty() || serves.at(model); }
  bool Finished() const;
  void ReportDepth(int model);
  static void DropAll(std::vector<std::pair<std::unique_ptr<ImageTask>, absl::Status>>& dropped);

  Clock* const clock_;
  const std::function<void(int, size_t)> on_queue_depth_;
  mutable std::mutex mu_;
  std::condition_variable changed_;  // notified on every change that may make a batch ready
  // Guarded by mu_:
  std::vector<std::unique_ptr<Queue>> queues_;  // by model index
  int in_flight_ = 0;
  bool closed_ = false;
};

}  // namespace tcm

#endif  // TCM_SERVER_BATCHER_H_
