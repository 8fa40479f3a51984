#include "server/batcher.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"

namespace tcm {

absl::StatusOr<std::unique_ptr<Batcher>> Batcher::Create(Options options) {
  if (options.models.empty()) return absl::InvalidArgumentError("batcher: no models");
  for (const auto& m : options.models) {
    if (m.max_batch_size == 0)
      return absl::InvalidArgumentError(absl::StrCat("model '", m.name, "': max_batch_size must be at least 1"));
    if (m.max_queue_size < m.max_batch_size)
      return absl::InvalidArgumentError(absl::StrCat("model '", m.name, "': max_queue_size (", m.max_queue_size,
                                                     ") must be at least max_batch_size (", m.max_batch_size, ")"));
    if (m.max_queue_delay < absl::ZeroDuration())
      return absl::InvalidArgumentError(absl::StrCat("model '", m.name, "': max_queue_delay must not be negative"));
  }
  return std::unique_ptr<Batcher>(new Batcher(std::move(options)));
}

Batcher::Batcher(Options options)
    : clock_(options.clock ? options.clock : RealClock()), on_queue_depth_(std::move(options.on_queue_depth)) {
  for (auto& m : options.models) queues_.push_back(std::make_unique<Queue>(std::move(m)));
}

absl::Status Batcher::Submit(int model, std::vector<std::unique_ptr<ImageTask>> tasks,
                             const std::function<void()>& accepted) {
  const absl::Time now = clock_->Now();
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) return absl::UnavailableError("the server is shutting down");
  Queue& q = *queues_.at(model);
  if (q.fresh.size() + tasks.size() > q.options.max_queue_size)
    return absl::ResourceExhaustedError(absl::StrCat("the queue of model '", q.options.name, "' is full (",
                                                     q.fresh.size(), " of ", q.options.max_queue_size,
                                                     " images queued); retry later"));
  if (accepted) accepted();
  for (auto& t : tasks) t->arrival = now;
  Enqueue(q, q.fresh, std::move(tasks));
  ReportDepth(model);
  changed_.notify_all();
  return absl::OkStatus();
}

void Batcher::Resubmit(int model, std::unique_ptr<ImageTask> task) {
  std::lock_guard<std::mutex> lock(mu_);
  Queue& q = *queues_.at(model);
  std::vector<std::unique_ptr<ImageTask>> one;
  one.push_back(std::move(task));
  Enqueue(q, q.returning, std::move(one));
  ReportDepth(model);
  changed_.notify_all();
}

void Batcher::Enqueue(const Queue& q, std::deque<std::unique_ptr<ImageTask>>& list,
                      std::vector<std::unique_ptr<ImageTask>> tasks) {
  for (auto& task : tasks) {
    auto place = list.end();
    if (q.options.deadline_aware) {  // after every task served before it or tied with it: ties keep their order
      place = std::upper_bound(list.begin(), list.end(), *task, [](const ImageTask& t, const auto& queued) {
        return std::tie(t.deadline, t.arrival) < std::tie(queued->deadline, queued->arrival);
      });
    }
    list.insert(place, std::move(task));
  }
}

const ImageTask* Batcher::Sweep(Queue& q, absl::Time now, absl::Duration pass, Dropped* dropped) {
  const ImageTask* oldest = nullptr;
  for (auto* list : {&q.returning, &q.fresh}) {
    for (auto it = list->begin(); it != list->end();) {
      ImageTask& task = **it;
      absl::Status why = task.Abandoned(now);
      DropCause cause = DropCause::kAbandoned;
      const absl::Duration needed = pass * task.steps_left;
      if (why.ok() && pass > absl::ZeroDuration() && now + needed > task.deadline) {
        why = absl::DeadlineExceededError(absl::StrCat(
            "the call's deadline cannot be met: it is ", absl::FormatDuration(task.deadline - now),
            " away and an image still needs ", task.steps_left, " forward pass(es) of about ",
            absl::FormatDuration(absl::Trunc(pass, absl::Microseconds(100)))));
        cause = DropCause::kDeadlineUnmeetable;
      }
      if (why.ok()) {
        if (oldest == nullptr || task.arrival < oldest->arrival) oldest = &task;
        ++it;
      } else {
        dropped->push_back({std::move(*it), std::move(why), cause});
        it = list->erase(it);
      }
    }
  }
  return oldest;
}

std::unique_ptr<Batch> Batcher::FormBatch(absl::Time now, const ModelSet& serves, Dropped* dropped) {
  int best = -1;
  const ImageTask* best_oldest = nullptr;
  for (size_t index = 0; index < queues_.size(); ++index) {
    Queue& q = *queues_[index];
    const size_t before = q.returning.size() + q.fresh.size();
    if (before == 0) continue;
    // Judged against a pass of the batch this queue would form now.
    const absl::Duration pass = q.options.deadline_aware
                                    ? q.pass_time.Estimate(std::min(before, q.options.max_batch_size))
                                    : absl::ZeroDuration();
    const ImageTask* oldest = Sweep(q, now, pass, dropped);
    const size_t size = q.returning.size() + q.fresh.size();
    if (size != before) ReportDepth(static_cast<int>(index));
    if (size == 0 || !Serves(serves, index)) continue;
    const bool ready = closed_ || !q.returning.empty() || size >= q.options.max_batch_size ||
                       oldest->arrival + q.options.max_queue_delay <= now;
    if (ready && (best_oldest == nullptr || oldest->arrival < best_oldest->arrival)) {
      best = static_cast<int>(index);
      best_oldest = oldest;
    }
  }
  if (best < 0) return nullptr;
  Queue& chosen = *queues_[best];
  auto batch = std::make_unique<Batch>();
  batch->model = best;
  batch->formed = now;
  const ModelQueueOptions& options = chosen.options;
  const int kind = best_oldest->kind;  // without kind mixing, the batch takes its oldest task's kind
  for (auto* list : {&chosen.returning, &chosen.fresh}) {
    if (!options.mix_steps && !batch->tasks.empty()) break;
    for (auto it = list->begin(); it != list->end() && batch->tasks.size() < options.max_batch_size;) {
      if (!options.mix_kinds && (*it)->kind != kind) {
        ++it;
        continue;
      }
      batch->tasks.push_back(std::move(*it));
      it = list->erase(it);
    }
  }
  ReportDepth(best);
  ++in_flight_;
  return batch;
}

absl::Time Batcher::NextReadyTime(const ModelSet& serves) const {
  absl::Time next = absl::InfiniteFuture();
  for (size_t index = 0; index < queues_.size(); ++index) {
    const Queue& q = *queues_[index];
    if (!Serves(serves, index)) continue;
    for (const auto& task : q.fresh) next = std::min(next, task->arrival + q.options.max_queue_delay);
  }
  return next;
}

bool Batcher::Finished() const {
  if (!closed_ || in_flight_ > 0) return false;
  for (const auto& q : queues_)
    if (!q->returning.empty() || !q->fresh.empty()) return false;
  return true;
}

void Batcher::ReportDepth(int model) {
  if (!on_queue_depth_) return;
  const Queue& q = *queues_[model];
  on_queue_depth_(model, q.returning.size() + q.fresh.size());
}

void Batcher::DropAll(Dropped& dropped) {
  for (auto& d : dropped) d.task->Drop(d.why, d.cause);
  dropped.clear();
}

std::unique_ptr<Batch> Batcher::NextBatch(const ModelSet& serves) {
  Dropped dropped;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    std::unique_ptr<Batch> batch = FormBatch(clock_->Now(), serves, &dropped);
    if (batch != nullptr || !dropped.empty()) {
      lock.unlock();
      DropAll(dropped);  // outside the lock: it finishes calls
      if (batch != nullptr) return batch;
      lock.lock();
      continue;
    }
    if (Finished()) return nullptr;
    const absl::Time ready = NextReadyTime(serves);
    if (ready == absl::InfiniteFuture()) {
      changed_.wait(lock);
    } else {
      changed_.wait_for(lock, absl::ToChronoNanoseconds(std::max(ready - clock_->Now(), absl::ZeroDuration())));
    }
  }
}

std::unique_ptr<Batch> Batcher::TryNextBatch(const ModelSet& serves) {
  Dropped dropped;
  std::unique_ptr<Batch> batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    batch = FormBatch(clock_->Now(), serves, &dropped);
  }
  DropAll(dropped);
  return batch;
}

void Batcher::BatchDone() {
  std::lock_guard<std::mutex> lock(mu_);
  --in_flight_;
  changed_.notify_all();
}

void Batcher::ObservePass(int model, size_t batch_size, absl::Duration took) {
  std::lock_guard<std::mutex> lock(mu_);
  queues_.at(model)->pass_time.Observe(batch_size, took);
}

absl::Duration Batcher::EstimatedPassTime(int model, size_t batch_size) const {
  std::lock_guard<std::mutex> lock(mu_);
  return queues_.at(model)->pass_time.Estimate(batch_size);
}

void Batcher::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  closed_ = true;
  changed_.notify_all();
}

size_t Batcher::QueueDepth(int model) const {
  std::lock_guard<std::mutex> lock(mu_);
  const Queue& q = *queues_.at(model);
  return q.returning.size() + q.fresh.size();
}

}  // namespace tcm
