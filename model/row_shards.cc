#include "model/row_shards.h"

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <omp.h>

#include <algorithm>
#include <utility>

#include "common/thread_priority.h"

namespace tcm {

std::vector<std::pair<int64_t, int64_t>> ShardRanges(int64_t rows, int shards) {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  const int64_t base = rows / shards, larger = rows % shards;
  int64_t begin = 0;
  for (int s = 0; s < shards; ++s) {
    const int64_t end = begin + base + (s < larger ? 1 : 0);
    ranges.emplace_back(begin, end);
    begin = end;
  }
  return ranges;
}

struct RowShardPool::Helper {
  std::thread thread;
  std::mutex mu;
  std::condition_variable cv;
  std::function<void()> task;  // set by Run, cleared by the helper when done
  bool stop = false;
};

RowShardPool::RowShardPool() = default;

RowShardPool::~RowShardPool() {
  for (auto& h : helpers_) {
    {
      std::lock_guard<std::mutex> lock(h->mu);
      h->stop = true;
    }
    h->cv.notify_one();
    h->thread.join();
  }
}

void RowShardPool::Grow(size_t helpers) {
  while (helpers_.size() < helpers) {
    auto h = std::make_unique<Helper>();
    Helper* self = h.get();
    h->thread = std::thread([this, self] {
      // One intra-op thread for good, set after LibTorch's per-thread
      // first-use set-up (which would reset it).
      at::get_num_threads();
      omp_set_num_threads(1);
      for (;;) {
        std::function<void()> task;
        {
          std::unique_lock<std::mutex> lock(self->mu);
          self->cv.wait(lock, [self] { return self->stop || self->task; });
          if (self->stop) return;
          task = std::move(self->task);
          self->task = nullptr;
        }
        task();
        {
          std::lock_guard<std::mutex> lock(mu_);
          --pending_;
        }
        done_cv_.notify_one();
      }
    });
    helpers_.push_back(std::move(h));
  }
}

void RowShardPool::Run(int64_t rows, int shards, const std::function<void(int, int64_t, int64_t)>& f) {
  shards = static_cast<int>(std::clamp<int64_t>(shards, 1, std::max<int64_t>(rows, 1)));
  const std::vector<std::pair<int64_t, int64_t>> ranges = ShardRanges(rows, shards);
  Grow(static_cast<size_t>(shards));
  std::vector<std::exception_ptr> errors(shards);
  const at::ThreadLocalState state;  // the caller's grad mode, inference mode and profiler
  const int nice = ThisThreadNice();
  // Every task is built before the first is handed out, so that nothing
  // below can throw while a helper uses this frame.
  std::vector<std::function<void()>> tasks;
  tasks.reserve(shards);
  for (int s = 0; s < shards; ++s) {
    tasks.emplace_back([&, s] {
      try {
        const int own = ThisThreadNice();
        if (nice > own) (void)LowerThisThreadPriority(nice - own);
        at::ThreadLocalStateGuard guard(state);
        f(s, ranges[s].first, ranges[s].second);
      } catch (...) {
        errors[s] = std::current_exception();
      }
    });
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_ = shards;
  }
  for (int s = 0; s < shards; ++s) {
    Helper& h = *helpers_[s];
    {
      std::lock_guard<std::mutex> lock(h.mu);
      h.task.swap(tasks[s]);
    }
    h.cv.notify_one();
  }
  {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [this] { return pending_ == 0; });
  }
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace tcm
