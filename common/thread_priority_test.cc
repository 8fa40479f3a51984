#include "common/thread_priority.h"

#include <gtest/gtest.h>

#include <thread>

namespace tcm {
namespace {

// Each case runs on a thread of its own: the change cannot be undone.
TEST(ThreadPriorityTest, RaisesTheCallingThreadsNiceAndNewThreadsInheritIt) {
  std::thread([] {
    const int before = ThisThreadNice();
    ASSERT_TRUE(LowerThisThreadPriority(3).ok());
    EXPECT_EQ(ThisThreadNice(), std::min(before + 3, 19));
    int child = -100;
    std::thread([&child] { child = ThisThreadNice(); }).join();
    EXPECT_EQ(child, std::min(before + 3, 19));
  }).join();
}

TEST(ThreadPriorityTest, OtherThreadsKeepTheirNice) {
  const int mine = ThisThreadNice();
  std::thread([] { ASSERT_TRUE(LowerThisThreadPriority(2).ok()); }).join();
  EXPECT_EQ(ThisThreadNice(), mine);
}

TEST(ThreadPriorityTest, ZeroChangesNothingAndOutOfRangeIsRefused) {
  std::thread([] {
    const int before = ThisThreadNice();
    EXPECT_TRUE(LowerThisThreadPriority(0).ok());
    EXPECT_EQ(ThisThreadNice(), before);
    EXPECT_EQ(LowerThisThreadPriority(-1).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(LowerThisThreadPriority(20).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ThisThreadNice(), before);
  }).join();
}

}  // namespace
}  // namespace tcm
