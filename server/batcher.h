// Step-level dynamic batcher: queues single images (one sampling step each)
// per model and hands whole batches to workers.
//
// - A request of k images is submitted as k tasks, all or none: a queue that
//   cannot take them all answers RESOURCE_EXHAUSTED at once.
// - A batch takes up to max_batch_size tasks of one model. It forms as soon as
//   that many are queued, or when the oldest has waited max_queue_delay.
// - Priority levels (Triton's convention: 1 is the highest). A batch is
//   filled from the highest level first; each level has a queue of
//   max_queue_size new tasks of its own, so a flood at one level cannot
//   refuse work at another.
// - A task coming back for its next step (Resubmit) goes ahead of new work of
//   its own and lower levels and keeps its original arrival time, so it never
//   waits for a batch to fill: items at their first and second step share
//   forward passes.
// - Tasks carry a kind (the server: their request's step count). Tasks of
//   different kinds share batches; with mix_kinds off each batch holds one
//   kind, as if every kind had a batcher of its own.
// - Tasks whose request was cancelled or whose deadline passed are removed
//   when a batch forms, before any compute, and told why (Drop).
// - Deadline-aware (on by default): within a level, earliest deadline first
//   (tasks without a deadline by arrival, after those with one), and
//   when a batch forms every queued task that could not finish before its
//   deadline even if computed now (its remaining passes at the estimated
//   pass time of this batch's size, PassTimeEstimate) is removed unmeetable.
//   Under overload the workers then spend their time on work that can still
//   be delivered. Workers report each pass's time (ObservePass).
// - Close() stops new submissions (UNAVAILABLE); NextBatch keeps serving
//   queued and returning work, then returns nullptr once all is done.
//   CutQueued() then drops what still waits (the drain deadline passed).
// - Models can be added while serving (AddModel) and retired (RetireModel):
//   a retired model takes no new submissions, its queued and returning work
//   still runs, and ModelIdle() says when none is left; ReleaseModel()
//   then frees its queue.
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
#include "server/pass_time_estimate.h"

namespace tcm {

// Why the batcher discarded a task.
enum class DropCause {
  kAbandoned,           // its request no longer wants it (Abandoned said why)
  kDeadlineUnmeetable,  // it could not finish before its deadline even if computed at once
  kShutdown,            // the server's drain time ran out while it waited (CutQueued)
};

// One image at one sampling step. Implemented by the serving layer.
class ImageTask {
 public:
  virtual ~ImageTask() = default;
  // Whether the request no longer wants this image; with the reason.
  virtual absl::Status Abandoned(absl::Time now) const = 0;
  // Called (outside the batcher's lock) when the batcher discards the task.
  virtual void Drop(const absl::Status& why, DropCause cause) = 0;

  absl::Time arrival;                            // set by Submit; kept across Resubmit
  int kind = 0;                                  // set by the caller; see ModelQueueOptions::mix_kinds
  absl::Time deadline = absl::InfiniteFuture();  // set by the caller: when its request stops wanting it
  int steps_left = 1;  // set by the caller: passes still needed, this one included (lower it before Resubmit)
  int priority = 1;    // set by the caller: 1 (highest) ..ModelQueueOptions::priority_levels
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
    // Queued new tasks per priority level before RESOURCE_EXHAUSTED, >= max_batch_size.
    size_t max_queue_size = kDefaultMaxQueueSize;
    int priority_levels = 1;         // tasks' priority is 1..priority_levels
    int default_priority_level = 1;  // for the service: the level of a request with priority 0
    // Step-level batching: first and next steps share batches. Off, a batch
    // holds only returning tasks or only new ones.
    bool mix_steps = true;
    // Tasks of different kinds share batches. Off, a batch holds one kind
    // (that of its first task in serving order); with mix_steps also off this is batching
    // every kind separately, the baseline step-level batching is measured against.
    bool mix_kinds = true;
    // Earliest deadline first, and tasks that cannot meet their deadline
    // removed before compute. Off: first come, first served, and a task is
    // removed only once its deadline has passed.
    bool deadline_aware = true;
  };
  struct Options {
    std::vector<ModelQueueOptions> models;
    Clock* clock = nullptr;  // nullptr = RealClock()
    // Called with (model, priority level, queued tasks of that level, new
    // and returning) for every level whenever a queue's length changes, under
    // the batcher's lock: keep it short and do not call the batcher.
    std::function<void(int, int, size_t)> on_queue_depth;
  };

  static absl::StatusOr<std::unique_ptr<Batcher>> Create(Options options);

  // Queues `tasks` (new images of one request) for `model`, all or none. On
  // success `accepted` (if set) runs under the lock, before any caller of
  // NextBatch can take a task: keep it short and do not call the batcher.
  absl::Status Submit(int model, std::vector<std::unique_ptr<ImageTask>> tasks,
                      const std::function<void()>& accepted = nullptr);

  // Queues a task for its next step, ahead of new work. Never rejected, also
  // after Close(); after CutQueued() the task is dropped instead. Call it
  // before BatchDone() of the batch it came from.
  void Resubmit(int model, std::unique_ptr<ImageTask> task);

  // Which models a caller runs: serves[m] for model m; empty = every model.
  using ModelSet = std::vector<bool>;

  // Blocks until a batch of a model in `serves` is ready and returns it;
  // nullptr once closed and every queue is empty with no batch in flight.
  std::unique_ptr<Batch> NextBatch(const ModelSet& serves = {});

  // Non-blocking: a batch of a model in `serves` if one is ready at
  // clock->Now(), else nullptr.
  std::unique_ptr<Batch> TryNextBatch(const ModelSet& serves = {});

  // A worker finished a batch of `model` from NextBatch/TryNextBatch (after resubmitting).
  void BatchDone(int model);

  // Adds a model queue; returns its index (the next one). `under_lock`, if
  // set, runs with that index under the batcher's lock before any caller of
  // NextBatch can see the model: the moment to extend a ModelSet that a
  // blocked NextBatch is reading. Keep it short and do not call the batcher.
  absl::StatusOr<int> AddModel(ModelQueueOptions options, const std::function<void(int)>& under_lock = nullptr);

  // `model` takes no new submissions (UNAVAILABLE, naming it); its queued and
  // returning tasks still run.
  void RetireModel(int model);

  // Whether `model` is retired with no task queued and no batch in flight
  // (true once released).
  bool ModelIdle(int model) const;

  // Frees the queue of `model`, which must be idle (ModelIdle): only its
  // index stays taken, never handed out again, so a caller still holding it
  // is refused (Submit: UNAVAILABLE) and reads depth and sizes of 0. A server
  // that loads new versions for months keeps no queue of the old ones.
  void ReleaseModel(int model);

  // Model queues held: added and not released.
  size_t ModelsHeld() const;

  // A forward pass of `batch_size` images of `model` took `took` (warm-up
  // passes included): feeds the pass-time estimate.
  void ObservePass(int model, size_t batch_size, absl::Duration took);

  // The estimated time of a pass of `batch_size` images of `model`; zero
  // until a pass was observed.
  absl::Duration EstimatedPassTime(int model, size_t batch_size) const;

  // Most tasks of `model` in one batch (ModelQueueOptions::max_batch_size).
  size_t MaxBatchSize(int model) const;

  // Stops accepting new submissions; queued work still drains.
  void Close();

  // Close(), and every task queued now (new and returning, every model) or
  // resubmitted later is dropped with `why` (DropCause::kShutdown): the
  // server's drain time is up. Batches in flight finish their pass.
  void CutQueued(const absl::Status& why);

  // Tasks waiting in `model`'s queue (new and returning, every level).
  size_t QueueDepth(int model) const;

  // Most new tasks `model`'s queue holds (ModelQueueOptions::max_queue_size).
  size_t MaxQueueSize(int model) const;

 private:
  // Both task lists are in serving order (ServedBefore).
  using TaskList = std::deque<std::unique_ptr<ImageTask>>;
  struct Queue {
    explicit Queue(ModelQueueOptions o)
        : options(std::move(o)),
          pass_time(options.max_batch_size),
          fresh_by_level(options.priority_levels + 1, 0),
          depth_by_level(options.priority_levels + 1, 0) {}
    ModelQueueOptions options;
    TaskList returning;  // next steps: ahead of new work of their level and lower ones
    TaskList fresh;      // first steps
    PassTimeEstimate pass_time;
    std::vector<size_t> fresh_by_level;  // by priority level (index 0 unused)
    std::vector<size_t> depth_by_level;  // new and returning
    int in_flight = 0;                   // batches taken and not yet done
    bool retired = false;
  };
  struct DroppedTask {
    std::unique_ptr<ImageTask> task;
    absl::Status why;
    DropCause cause;
  };
  using Dropped = std::vector<DroppedTask>;

  explicit Batcher(Options options);

  // Retired with nothing queued or in flight, or released (null).
  static bool Idle(const Queue* q);

  // Forms a batch of a model in `serves` if one is ready at `now`; abandoned
  // tasks (of any model) go to `dropped`. The helpers below need mu_ held.
  std::unique_ptr<Batch> FormBatch(absl::Time now, const ModelSet& serves, Dropped* dropped);
  // Moves the tasks of `q` that are abandoned, or cannot finish by their
  // deadline at `pass` per remaining step, to `dropped`; returns the oldest
  // remaining task (nullptr when none is left).
  static const ImageTask* Sweep(Queue& q, absl::Time now, absl::Duration pass, Dropped* dropped);
  // Whether `a` is served before `b` in one list: by level, then (when
  // deadline-aware) deadline, then arrival.
  static bool ServedBefore(const ImageTask& a, const ImageTask& b, bool deadline_aware);
  // Inserts `task` into `list` (q.fresh or q.returning) at its place in
  // serving order, after the tasks it ties with.
  static void Enqueue(Queue& q, TaskList& list, std::unique_ptr<ImageTask> task);
  // Removes the task at `it` from `list` (q.fresh or q.returning), moving `it` on.
  static std::unique_ptr<ImageTask> Take(Queue& q, TaskList& list, TaskList::iterator& it);
  // Earliest time at which a non-empty queue in `serves` becomes ready by waiting.
  absl::Time NextReadyTime(const ModelSet& serves) const;
  static bool Serves(const ModelSet& serves, size_t model) {
    return serves.empty() || (model < serves.size() && serves[model]);
  }
  static absl::Status CheckOptions(const ModelQueueOptions& m);
  bool Finished() const;
  void ReportDepth(int model);
  static void DropAll(Dropped& dropped);

  Clock* const clock_;
  const std::function<void(int, int, size_t)> on_queue_depth_;
  mutable std::mutex mu_;
  std::condition_variable changed_;  // notified on every change that may make a batch ready
  // Guarded by mu_:
  std::vector<std::unique_ptr<Queue>> queues_;  // by model index; null once released
  int in_flight_ = 0;
  bool closed_ = false;
  absl::Status cut_;  // not OK once CutQueued ran: why waiting work is dropped
};

}  // namespace tcm

#endif  // TCM_SERVER_BATCHER_H_
