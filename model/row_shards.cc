#include "model/row_shards.h"

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <omp.h>

#include <algorithm>
#include <utility>

#include "common/thread_priority.h"

namespace tcm {
namespace {

// Runs `f` with one intra-op thread on the calling thread, then restores its
// count. (LibTorch's count is per thread: OpenMP's nthreads-var.)
template <typename F>
void WithOneIntraOpThread(F&& f) {
  const int before = at::get_num_threads();  // also LibTorch's per-thread first-use set-up
  omp_set_num_threads(1);
  try {
    f();
  } catch (...) {
    omp_set_num_threads(before);
    throw;
  }
  omp_set_num_threads(before);
}

}  // namespace

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
  if (shards == 1) return f(0, ranges[0].first, ranges[0].second);
  Grow(static_cast<size_t>(shards - 1));
  std::vector<std::exception_ptr> errors(shards);
  const at::ThreadLocalState state;  // the caller's grad mode, inference mode and profiler
  const int nice = ThisThreadNice();
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_ = shards - 1;
  }
  for (int s = 1; s < shards; ++s) {
    Helper& h = *helpers_[s - 1];
    {
      std::lock_guard<std::mutex> lock(h.mu);
      h.task = [&, s] {
        try {
          const int own = ThisThreadNice();
          if (nice > own) (void)LowerThisThreadPriority(nice - own);
          at::ThreadLocalStateGuard guard(state);
          WithOneIntraOpThread([&] { f(s, ranges[s].first, ranges[s].second); });
        } catch (...) {
          errors[s] = std::current_exception();
        }
      };
    }
    h.cv.notify_one();
  }
  try {
    WithOneIntraOpThread([&] { f(0, ranges[0].first, ranges[0].second); });
  } catch (...) {
    errors[0] = std::current_exception();
  }
  {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [this] { return pending_ == 0; });
  }
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace tcm
