#include "server/pass_time_estimate.h"

#include <gtest/gtest.h>

namespace tcm {
namespace {

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

TEST(PassTimeEstimateTest, NothingObservedMeansNoEstimate) {
  PassTimeEstimate estimate(16);
  EXPECT_EQ(estimate.Estimate(1), absl::ZeroDuration());
  EXPECT_EQ(estimate.Estimate(16), absl::ZeroDuration());
}

TEST(PassTimeEstimateTest, AnObservedSizeKeepsWeightedMeansOfTimeAndDeviation) {
  PassTimeEstimate estimate(16);
  estimate.Observe(16, absl::Milliseconds(40));
  EXPECT_DOUBLE_EQ(Ms(estimate.Estimate(16)), 40);
  estimate.Observe(16, absl::Milliseconds(80));
  // Mean 40 x 0.75 + 80 x 0.25 = 50; deviation 0.25 x |80 - 40| = 10.
  EXPECT_NEAR(Ms(estimate.Estimate(16)), 50 + PassTimeEstimate::kDeviations * 10, 1e-9);
  for (int i = 0; i < 200; ++i) estimate.Observe(16, absl::Milliseconds(30));
  EXPECT_NEAR(Ms(estimate.Estimate(16)), 30, 1e-6) << "steady times: the deviation fades";
}

TEST(PassTimeEstimateTest, UnobservedSizesAreInterpolatedBetweenObservedOnes) {
  PassTimeEstimate estimate(16);
  estimate.Observe(1, absl::Milliseconds(10));
  estimate.Observe(16, absl::Milliseconds(40));
  EXPECT_DOUBLE_EQ(Ms(estimate.Estimate(6)), 10 + 30 * 5.0 / 15.0);
  estimate.Observe(11, absl::Milliseconds(20));
  EXPECT_DOUBLE_EQ(Ms(estimate.Estimate(6)), 10 + 10 * 5.0 / 10.0);
  EXPECT_DOUBLE_EQ(Ms(estimate.Estimate(14)), 20 + 20 * 3.0 / 5.0);
}

TEST(PassTimeEstimateTest, OutsideTheObservedSizesTimeScalesWithTheSize) {
  PassTimeEstimate estimate(16);
  estimate.Observe(4, absl::Milliseconds(20));
  EXPECT_DOUBLE_EQ(Ms(estimate.Estimate(8)), 40);
  EXPECT_DOUBLE_EQ(Ms(estimate.Estimate(2)), 10);
}

TEST(PassTimeEstimateTest, SizesAreClampedAndBadObservationsIgnored) {
  PassTimeEstimate estimate(8);
  estimate.Observe(0, absl::Milliseconds(5));
  estimate.Observe(9, absl::Milliseconds(5));
  estimate.Observe(8, absl::ZeroDuration());
  estimate.Observe(8, absl::Milliseconds(-3));
  EXPECT_EQ(estimate.Estimate(8), absl::ZeroDuration());
  estimate.Observe(8, absl::Milliseconds(24));
  EXPECT_DOUBLE_EQ(Ms(estimate.Estimate(100)), 24);
  EXPECT_DOUBLE_EQ(Ms(estimate.Estimate(0)), 3);
}

}  // namespace
}  // namespace tcm
