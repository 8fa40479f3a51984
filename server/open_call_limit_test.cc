#include "server/open_call_limit.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace tcm {
namespace {

TEST(OpenCallLimitTest, HandsOutAtMostMaxSlotsAndTakesBackEachOnItsEnd) {
  OpenCallLimit limit(2);
  auto a = limit.TryTake();
  auto b = limit.TryTake();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(limit.TryTake(), nullptr);
  EXPECT_EQ(limit.open(), 2) << "a refusal leaves the count as it was";
  a.reset();
  EXPECT_EQ(limit.open(), 1);
  EXPECT_NE(limit.TryTake(), nullptr);  // taken and given back at once
  EXPECT_EQ(limit.open(), 1);
}

TEST(OpenCallLimitTest, ThreadsTakingAtOnceNeverHoldMoreThanMax) {
  OpenCallLimit limit(3);
  std::vector<std::thread> threads;
  std::vector<std::unique_ptr<OpenCallSlot>> held(8);
  for (int t = 0; t < 8; ++t) threads.emplace_back([&, t] { held[t] = limit.TryTake(); });
  for (auto& t : threads) t.join();
  int granted = 0;
  for (const auto& slot : held) granted += slot != nullptr;
  EXPECT_EQ(granted, 3);
  EXPECT_EQ(limit.open(), 3);
  held.clear();
  EXPECT_EQ(limit.open(), 0);
}

}  // namespace
}  // namespace tcm
