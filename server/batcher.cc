#include "server/batcher.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace tcm {

using Dropped = std::vector<std::pair<std::unique_ptr<ImageTask>, absl::Status>>;

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
  for (auto& m : options.models) queues_.push_back(std::make_unique<Queue>(Queue{std::move(m), {}, {}}));
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
  for (auto& t : tasks) {
    t->arrival = now;
    q.fresh.push_back(std::move(t));
  }
  ReportDepth(model);
  changed_.notify_all();
  return absl::OkStatus();
}

void Batcher::Resubmit(int model, std::unique_ptr<ImageTask> task) {
  std::lock_guard<std::mutex> lock(mu_);
  queues_.at(model)->returning.push_back(std::move(task));
  ReportDepth(model);
  changed_.notify_all();
}

std::unique_ptr<Batch> Batcher::FormBatch(absl::Time now, const ModelSet& serves, Dropped* dropped) {
  int best = -1;
  absl::Time best_arrival = absl::InfiniteFuture();
  for (size_t index = 0; index < queues_.size(); ++index) {
    Queue& q = *queues_[index];
    const size_t before = q.returning.size() + q.fresh.size();
    for (auto* deque : {&q.returning, &q.fresh}) {
      for (auto it = deque->begin(); it != deque->end();) {
        absl::Status why = (*it)->Abandoned(now);
        if (why.ok()) {
          ++it;
        } else {
          dropped->emplace_back(std::move(*it), std::move(why));
          it = deque->erase(it);
        }
      }
    }
    const size_t size = q.returning.size() + q.fresh.size();
    if (size != before) ReportDepth(static_cast<int>(index));
    if (size == 0 || !Serves(serves, index)) continue;
    const absl::Time oldest = std::min(q.returning.empty() ? absl::InfiniteFuture() : q.returning.front()->arrival,
                                       q.fresh.empty() ? absl::InfiniteFuture() : q.fresh.front()->arrival);
    const bool ready = closed_ || !q.returning.empty() || size >= q.options.max_batch_size ||
                       oldest + q.options.max_queue_delay <= now;
    if (ready && oldest < best_arrival) {
      best = static_cast<int>(index);
      best_arrival = oldest;
    }
  }
  if (best < 0) return nullptr;
  Queue& chosen = *queues_[best];
  auto batch = std::make_unique<Batch>();
  batch->model = best;
  batch->formed = now;
  const ModelQueueOptions& options = chosen.options;
  // Without kind mixing the batch takes the kind of the queue's oldest task.
  const bool returning_is_oldest =
      chosen.fresh.empty() ||
      (!chosen.returning.empty() && chosen.returning.front()->arrival <= chosen.fresh.front()->arrival);
  const std::unique_ptr<ImageTask>& oldest = returning_is_oldest ? chosen.returning.front() : chosen.fresh.front();
  const int kind = oldest->kind;
  for (auto* deque : {&chosen.returning, &chosen.fresh}) {
    if (!options.mix_steps && !batch->tasks.empty()) break;
    for (auto it = deque->begin(); it != deque->end() && batch->tasks.size() < options.max_batch_size;) {
      if (!options.mix_kinds && (*it)->kind != kind) {
        ++it;
        continue;
      }
      batch->tasks.push_back(std::move(*it));
      it = deque->erase(it);
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
    if (!q.fresh.empty() && Serves(serves, index))
      next = std::min(next, q.fresh.front()->arrival + q.options.max_queue_delay);
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
  for (auto& [task, why] : dropped) task->Drop(why);
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
