#include "model/row_shards.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

namespace tcm {
namespace {

using Ranges = std::vector<std::pair<int64_t, int64_t>>;

TEST(ShardRangesTest, ContiguousNearEqualLargerFirst) {
  EXPECT_EQ(ShardRanges(16, 2), (Ranges{{0, 8}, {8, 16}}));
  EXPECT_EQ(ShardRanges(7, 2), (Ranges{{0, 4}, {4, 7}}));
  EXPECT_EQ(ShardRanges(10, 4), (Ranges{{0, 3}, {3, 6}, {6, 8}, {8, 10}}));
  EXPECT_EQ(ShardRanges(5, 1), (Ranges{{0, 5}}));
}

// What one shard saw.
struct ShardRecord {
  int shard;
  int64_t begin, end;
  std::thread::id thread;
  int intra_op_threads;
  bool inference_mode;
};

TEST(RowShardPoolTest, RunsEveryShardOnItsOwnThreadWithOneIntraOpThreadAndTheCallersMode) {
  at::set_num_threads(2);
  RowShardPool pool;
  for (int repeat = 0; repeat < 3; ++repeat) {  // helpers are kept between runs
    std::mutex mu;
    std::vector<ShardRecord> seen;
    {
      c10::InferenceMode inference;
      pool.Run(11, 3, [&](int shard, int64_t begin, int64_t end) {
        std::lock_guard<std::mutex> lock(mu);
        seen.push_back(
            {shard, begin, end, std::this_thread::get_id(), at::get_num_threads(), c10::InferenceMode::is_enabled()});
      });
    }
    ASSERT_EQ(seen.size(), 3u);
    std::sort(seen.begin(), seen.end(), [](const auto& a, const auto& b) { return a.shard < b.shard; });
    const Ranges expected = ShardRanges(11, 3);
    std::set<std::thread::id> threads;
    for (int s = 0; s < 3; ++s) {
      EXPECT_EQ(seen[s].shard, s);
      EXPECT_EQ(std::make_pair(seen[s].begin, seen[s].end), expected[s]);
      EXPECT_EQ(seen[s].intra_op_threads, 1) << "shard " << s;
      EXPECT_TRUE(seen[s].inference_mode) << "shard " << s;
      threads.insert(seen[s].thread);
    }
    EXPECT_EQ(threads.size(), 3u);
    EXPECT_EQ(threads.count(std::this_thread::get_id()), 0u) << "the caller only waits";
    EXPECT_EQ(at::get_num_threads(), 2) << "the caller keeps its intra-op threads";
  }
}

TEST(RowShardPoolTest, FewerRowsThanShardsRunOneShardPerRow) {
  RowShardPool pool;
  std::atomic<int> calls{0};
  std::atomic<int64_t> rows{0};
  pool.Run(2, 4, [&](int, int64_t begin, int64_t end) {
    ++calls;
    rows += end - begin;
  });
  EXPECT_EQ(calls.load(), 2);
  EXPECT_EQ(rows.load(), 2);
}

TEST(RowShardPoolTest, AShardsExceptionReachesTheCallerAfterEveryShardFinished) {
  at::set_num_threads(2);
  RowShardPool pool;
  std::atomic<int> finished{0};
  EXPECT_THROW(pool.Run(4, 2,
                        [&](int shard, int64_t, int64_t) {
                          if (shard == 0) throw std::runtime_error("shard 0 failed");
                          // Still running when shard 0 has failed: Run must wait for it.
                          std::this_thread::sleep_for(std::chrono::milliseconds(50));
                          ++finished;
                        }),
               std::runtime_error);
  EXPECT_EQ(finished.load(), 1);
  EXPECT_EQ(at::get_num_threads(), 2);
  // The pool still works after a failure.
  std::atomic<int> calls{0};
  pool.Run(4, 2, [&](int, int64_t, int64_t) { ++calls; });
  EXPECT_EQ(calls.load(), 2);
}

}  // namespace
}  // namespace tcm
