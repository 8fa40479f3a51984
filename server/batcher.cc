#include "server/batcher.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace tcm {

absl::Status Batcher::CheckOptions(const ModelQueueOptions& m) {
  if (m.max_batch_size == 0)
    return absl::InvalidArgumentError(absl::StrCat("model '", m.name, "': max_batch_size must be at least 1"));
  if (m.max_queue_size < m.max_batch_size)
    return absl::InvalidArgumentError(absl::StrCat("model '", m.name, "': max_queue_size (", m.max_queue_size,
                                                   ") must be at least max_batch_size (", m.max_batch_size, ")"));
  if (m.max_queue_delay < absl::ZeroDuration())
    return absl::InvalidArgumentError(absl::StrCat("model '", m.name, "': max_queue_delay must not be negative"));
  if (m.priority_levels < 1)
    return absl::InvalidArgumentError(absl::StrCat("model '", m.name, "': priority_levels must be at least 1"));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Batcher>> Batcher::Create(Options options) {
  if (options.models.empty()) return absl::InvalidArgumentError("batcher: no models");
  for (const auto& m : options.models)
    if (absl::Status checked = CheckOptions(m); !checked.ok()) return checked;
  return std::unique_ptr<Batcher>(new Batcher(std::move(options)));
}

absl::StatusOr<int> Batcher::AddModel(ModelQueueOptions options, const std::function<void(int)>& under_lock) {
  if (absl::Status checked = CheckOptions(options); !checked.ok()) return checked;
  std::lock_guard<std::mutex> lock(mu_);
  const int model = static_cast<int>(queues_.size());
  queues_.push_back(std::make_unique<Queue>(std::move(options)));
  if (under_lock) under_lock(model);
  changed_.notify_all();  // no depth to report: the queue is empty
  return model;
}

void Batcher::RetireModel(int model) {
  std::lock_guard<std::mutex> lock(mu_);
  if (Queue* q = queues_.at(model).get()) q->retired = true;
}

bool Batcher::Idle(const Queue* q) {
  return q == nullptr || (q->retired && q->in_flight == 0 && q->returning.empty() && q->fresh.empty());
}

bool Batcher::ModelIdle(int model) const {
  std::lock_guard<std::mutex> lock(mu_);
  return Idle(queues_.at(model).get());
}

void Batcher::ReleaseModel(int model) {
  std::lock_guard<std::mutex> lock(mu_);
  if (Idle(queues_.at(model).get())) queues_.at(model).reset();
}

size_t Batcher::ModelsHeld() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<size_t>(std::count_if(queues_.begin(), queues_.end(), [](const auto& q) { return q != nullptr; }));
}

size_t Batcher::MaxBatchSize(int model) const {
  std::lock_guard<std::mutex> lock(mu_);
  const Queue* q = queues_.at(model).get();
  return q ? q->options.max_batch_size : 0;
}

size_t Batcher::MaxQueueSize(int model) const {
  std::lock_guard<std::mutex> lock(mu_);
  const Queue* q = queues_.at(model).get();
  return q ? q->options.max_queue_size : 0;
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
  if (queues_.at(model) == nullptr)
    return absl::UnavailableError("the model was unloaded or replaced while the call started; retry");
  Queue& q = *queues_.at(model);
  if (q.retired)
    return absl::UnavailableError(
        absl::StrCat("model '", q.options.name, "' was unloaded or replaced while the call started; retry"));
  if (tasks.empty()) {
    if (accepted) accepted();
    return absl::OkStatus();
  }
  const int level = tasks.front()->priority;
  for (const auto& t : tasks)
    if (t->priority != level || level < 1 || level > q.options.priority_levels)
      return absl::InvalidArgumentError(
          absl::StrCat("batcher: the tasks of one submission need one priority in 1..", q.options.priority_levels));
  const size_t queued = q.fresh_by_level[level];
  if (queued + tasks.size() > q.options.max_queue_size)
    return absl::ResourceExhaustedError(absl::StrCat(
        "the queue of model '", q.options.name, "' is full (", queued, " of ", q.options.max_queue_size,
        " images queued", q.options.priority_levels > 1 ? absl::StrCat(" at priority ", level) : "", "); retry later"));
  if (accepted) accepted();
  for (auto& t : tasks) {
    t->arrival = now;
    Enqueue(q, q.fresh, std::move(t));
  }
  ReportDepth(model);
  changed_.notify_all();
  return absl::OkStatus();
}

void Batcher::Resubmit(int model, std::unique_ptr<ImageTask> task) {
  absl::Status cut;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cut_.ok()) {
      Queue& q = *queues_.at(model);
      Enqueue(q, q.returning, std::move(task));
      ReportDepth(model);
      changed_.notify_all();
      return;
    }
    cut = cut_;
  }
  task->Drop(cut, DropCause::kShutdown);  // outside the lock: it may finish a call
}

bool Batcher::ServedBefore(const ImageTask& a, const ImageTask& b, bool deadline_aware) {
  if (a.priority != b.priority) return a.priority < b.priority;
  if (deadline_aware && a.deadline != b.deadline) return a.deadline < b.deadline;
  return a.arrival < b.arrival;
}

void Batcher::Enqueue(Queue& q, TaskList& list, std::unique_ptr<ImageTask> task) {
  const bool deadline_aware = q.options.deadline_aware;
  // The first queued task that `task` is served before: ties keep their order.
  auto served_before = [deadline_aware](const ImageTask& t, const std::unique_ptr<ImageTask>& queued) {
    return ServedBefore(t, *queued, deadline_aware);
  };
  auto place = std::upper_bound(list.begin(), list.end(), *task, served_before);
  const size_t level = static_cast<size_t>(task->priority);
  if (&list == &q.fresh) ++q.fresh_by_level.at(level);
  ++q.depth_by_level.at(level);
  list.insert(place, std::move(task));
}

std::unique_ptr<ImageTask> Batcher::Take(Queue& q, TaskList& list, TaskList::iterator& it) {
  std::unique_ptr<ImageTask> task = std::move(*it);
  it = list.erase(it);
  const size_t level = static_cast<size_t>(task->priority);
  if (&list == &q.fresh) --q.fresh_by_level[level];
  --q.depth_by_level[level];
  return task;
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
        why = absl::DeadlineExceededError(
            absl::StrCat("the call's deadline cannot be met: it is ", absl::FormatDuration(task.deadline - now),
                         " away and an image still needs ", task.steps_left, " forward pass(es) of about ",
                         absl::FormatDuration(absl::Trunc(pass, absl::Microseconds(100)))));
        cause = DropCause::kDeadlineUnmeetable;
      }
      if (why.ok()) {
        if (oldest == nullptr || task.arrival < oldest->arrival) oldest = &task;
        ++it;
      } else {
        dropped->push_back({Take(q, *list, it), std::move(why), cause});
      }
    }
  }
  return oldest;
}

std::unique_ptr<Batch> Batcher::FormBatch(absl::Time now, const ModelSet& serves, Dropped* dropped) {
  int best = -1;
  const ImageTask* best_oldest = nullptr;
  for (size_t index = 0; index < queues_.size(); ++index) {
    if (queues_[index] == nullptr) continue;
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
  // A level's returning tasks come before its new ones.
  auto first_is_returning = [](const TaskList& returning, const TaskList::iterator& r, const TaskList& fresh,
                               const TaskList::iterator& f) {
    return r != returning.end() && (f == fresh.end() || (*r)->priority <= (*f)->priority);
  };
  // Without kind mixing the batch takes the kind of the first task in serving order.
  const int kind = first_is_returning(chosen.returning, chosen.returning.begin(), chosen.fresh, chosen.fresh.begin())
                       ? chosen.returning.front()->kind
                       : chosen.fresh.front()->kind;
  auto fits = [&](const TaskList::iterator& it) { return options.mix_kinds || (*it)->kind == kind; };
  // Merges the two lists level by level. Without step mixing a batch holds
  // only returning tasks or only new ones: once it took from one list, the
  // other counts as empty.
  auto r = chosen.returning.begin(), f = chosen.fresh.begin();
  bool took_returning = false, took_fresh = false;
  while (batch->tasks.size() < options.max_batch_size) {
    while (r != chosen.returning.end() && !fits(r)) ++r;
    while (f != chosen.fresh.end() && !fits(f)) ++f;
    if (!options.mix_steps && took_fresh) r = chosen.returning.end();
    if (!options.mix_steps && took_returning) f = chosen.fresh.end();
    if (r == chosen.returning.end() && f == chosen.fresh.end()) break;
    const bool take_returning = first_is_returning(chosen.returning, r, chosen.fresh, f);
    if (take_returning) {
      batch->tasks.push_back(Take(chosen, chosen.returning, r));
      took_returning = true;
    } else {
      batch->tasks.push_back(Take(chosen, chosen.fresh, f));
      took_fresh = true;
    }
  }
  ReportDepth(best);
  ++in_flight_;
  ++chosen.in_flight;
  return batch;
}

absl::Time Batcher::NextReadyTime(const ModelSet& serves) const {
  absl::Time next = absl::InfiniteFuture();
  for (size_t index = 0; index < queues_.size(); ++index) {
    if (queues_[index] == nullptr || !Serves(serves, index)) continue;
    const Queue& q = *queues_[index];
    for (const auto& task : q.fresh) next = std::min(next, task->arrival + q.options.max_queue_delay);
  }
  return next;
}

bool Batcher::Finished() const {
  if (!closed_ || in_flight_ > 0) return false;
  for (const auto& q : queues_)
    if (q != nullptr && (!q->returning.empty() || !q->fresh.empty())) return false;
  return true;
}

void Batcher::ReportDepth(int model) {
  if (!on_queue_depth_) return;
  const Queue& q = *queues_[model];
  for (int level = 1; level <= q.options.priority_levels; ++level)
    on_queue_depth_(model, level, q.depth_by_level[level]);
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

void Batcher::BatchDone(int model) {
  std::lock_guard<std::mutex> lock(mu_);
  --in_flight_;
  --queues_.at(model)->in_flight;
  changed_.notify_all();
}

void Batcher::ObservePass(int model, size_t batch_size, absl::Duration took) {
  std::lock_guard<std::mutex> lock(mu_);
  if (Queue* q = queues_.at(model).get()) q->pass_time.Observe(batch_size, took);
}

absl::Duration Batcher::EstimatedPassTime(int model, size_t batch_size) const {
  std::lock_guard<std::mutex> lock(mu_);
  const Queue* q = queues_.at(model).get();
  return q ? q->pass_time.Estimate(batch_size) : absl::ZeroDuration();
}

void Batcher::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  closed_ = true;
  changed_.notify_all();
}

void Batcher::CutQueued(const absl::Status& why) {
  Dropped dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    cut_ = why.ok() ? absl::UnavailableError("the server is shutting down") : why;
    for (size_t model = 0; model < queues_.size(); ++model) {
      if (queues_[model] == nullptr) continue;
      Queue& q = *queues_[model];
      for (auto* list : {&q.returning, &q.fresh})
        for (auto it = list->begin(); it != list->end();)
          dropped.push_back(DroppedTask{Take(q, *list, it), cut_, DropCause::kShutdown});
      ReportDepth(static_cast<int>(model));
    }
    changed_.notify_all();
  }
  DropAll(dropped);  // outside the lock: it finishes calls
}

size_t Batcher::QueueDepth(int model) const {
  std::lock_guard<std::mutex> lock(mu_);
  const Queue* q = queues_.at(model).get();
  return q ? q->returning.size() + q->fresh.size() : 0;
}

}  // namespace tcm
