// Splits the rows of an inference batch over threads: each shard of rows runs
// on a thread of its own with one intra-op thread, so that the operations of a
// pass need no hand-over between threads. On a few cores the intra-op split
// of each operation costs a barrier per operation and leaves one thread
// waiting while the other dispatches the next; whole shards do not.
#ifndef TCM_MODEL_ROW_SHARDS_H_
#define TCM_MODEL_ROW_SHARDS_H_

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace tcm {

// The [begin, end) row ranges of `rows` rows in `shards` contiguous shards,
// sizes differing by at most one, the larger first. shards >= 1.
std::vector<std::pair<int64_t, int64_t>> ShardRanges(int64_t rows, int shards);

class RowShardPool {
 public:
  RowShardPool();
  ~RowShardPool();
  RowShardPool(const RowShardPool&) = delete;
  RowShardPool& operator=(const RowShardPool&) = delete;

  // Runs f(shard, begin, end) once per range of ShardRanges(rows, shards),
  // `shard` its index, each on a helper thread of its own (created on first
  // use and kept) while the caller waits. Helpers always run one intra-op
  // thread, so no thread ever switches between counts (the caller keeps its
  // own), and each shard runs with the caller's LibTorch thread-local state
  // (grad and inference mode, the profiler) and at least its nice value.
  // Returns when all have finished; rethrows the first shard's exception.
  // One Run at a time per pool.
  void Run(int64_t rows, int shards, const std::function<void(int, int64_t, int64_t)>& f);

 private:
  struct Helper;
  void Grow(size_t helpers);

  std::vector<std::unique_ptr<Helper>> helpers_;
  std::mutex mu_;
  std::condition_variable done_cv_;
  int pending_ = 0;  // helper shards of the current Run still running
};

}  // namespace tcm

#endif  // TCM_MODEL_ROW_SHARDS_H_
