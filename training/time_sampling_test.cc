#include "training/time_sampling.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

namespace tcm {
namespace {

TEST(TimeSamplingTest, CdfsMatchScipy) {
  // Values from scipy.stats (t.cdf, norm.cdf).
  EXPECT_NEAR(NormalCdf(1.0), 0.8413447460685429, 1e-12);
  EXPECT_NEAR(StudentTCdf(1.0, 2.0), 0.7886751345948129, 1e-10);
  EXPECT_NEAR(StudentTCdf(0.3, 7.5), 0.6138386707156109, 1e-10);
  EXPECT_NEAR(StudentTCdf(-2.5, 0.01), 0.4808352404927154, 1e-10);
  EXPECT_NEAR(StudentTCdf(3.0, 0.01), 0.5200400381773131, 1e-10);
  EXPECT_DOUBLE_EQ(StudentTCdf(0.0, 3.0), 0.5);
}

// The empirical CDF of log t matches the truncated distribution's CDF.
void ExpectFollows(const TimeDistribution& d, double (*cdf)(double, double)) {
  torch::manual_seed(1);
  const int64_t n = 20000;
  const torch::Tensor t = SampleTimes(n, d);
  ASSERT_EQ(t.sizes(), torch::IntArrayRef({n}));
  EXPECT_GE(t.min().item<double>(), d.t_lower * (1 - 1e-6));
  EXPECT_LE(t.max().item<double>(), d.t_upper * (1 + 1e-6));
  const torch::Tensor log_t = t.log().to(torch::kFloat64);
  const double lo = (std::log(d.t_lower) - d.mean) / d.std, hi = (std::log(d.t_upper) - d.mean) / d.std;
  for (double q : {0.1, 0.25, 0.5, 0.75, 0.9}) {
    const double x = std::log(d.t_lower) + q * (std::log(d.t_upper) - std::log(d.t_lower));
    const double expected = (cdf((x - d.mean) / d.std, d.df) - cdf(lo, d.df)) / (cdf(hi, d.df) - cdf(lo, d.df));
    const double observed = (log_t < x).to(torch::kFloat64).mean().item<double>();
    EXPECT_NEAR(observed, expected, 0.015) << "at log t = " << x;
  }
}

TEST(TimeSamplingTest, TruncatedNormalOfStageOne) {
  TimeDistribution d;  // reference defaults: N(-1.1, 2.0) on [0.002, 80]
  ExpectFollows(d, [](double x, double) { return NormalCdf(x); });
}

TEST(TimeSamplingTest, TruncatedStudentTOfStageTwo) {
  TimeDistribution d;  // the reference's stage-2 recipe: t(df 0.01) around 0, on [t' = 1, 80]
  d.kind = TimeDistribution::Kind::kStudentT;
  d.mean = 0;
  d.std = 0.2;
  d.df = 0.01;
  d.t_lower = 1.0;
  ExpectFollows(d, StudentTCdf);
}

TEST(TimeSamplingTest, StudentTHasHeavierTailsThanNormal) {
  TimeDistribution normal, student;
  normal.mean = student.mean = 0;
  normal.std = student.std = 0.5;
  normal.t_lower = student.t_lower = 1.0;
  student.kind = TimeDistribution::Kind::kStudentT;
  student.df = 2;
  torch::manual_seed(2);
  // Beyond log t = 1.6, 3.2 scales out: about 0.14% of the half-normal, 8.5% of the half-t(2).
  const double far_normal = (SampleTimes(20000, normal) > 5).to(torch::kFloat64).mean().item<double>();
  const double far_student = (SampleTimes(20000, student) > 5).to(torch::kFloat64).mean().item<double>();
  EXPECT_LT(far_normal, 0.005);
  EXPECT_GT(far_student, 0.05);
}

TEST(TimeSamplingTest, ParsesKinds) {
  EXPECT_EQ(*ParseTimeDistributionKind("t", "--tdist"), TimeDistribution::Kind::kStudentT);
  EXPECT_EQ(*ParseTimeDistributionKind("normal", "--tdist"), TimeDistribution::Kind::kNormal);
  const auto bad = ParseTimeDistributionKind("cauchy", "--tdist");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--tdist: must be \"normal\" or \"t\""), std::string::npos);
}

TEST(TimeSamplingTest, DeltaSigmoidFollowsEct) {
  const torch::Tensor t = torch::tensor({0.002, 0.5, 1.0, 80.0}, torch::kFloat64);
  const double ratio = 0.875;
  const torch::Tensor dt = DeltaSigmoid(t, ratio);
  for (int i = 0; i < 4; ++i) {
    const double ti = t[i].item<double>();
    const double expected = ti * (1 - ratio) * (1 + 8 / (1 + std::exp(ti)));
    EXPECT_NEAR(dt[i].item<double>(), expected, 1e-12) << "t = " << ti;
  }
  // With ratio 0 the gap at t = 0.002 (5 t) would pass zero; r is held at 1e-6.
  EXPECT_NEAR((t - DeltaSigmoid(t, 0.0))[0].item<double>(), 1e-6, 1e-12);
  // The gap shrinks as the ratio grows.
  EXPECT_LT(DeltaSigmoid(t, 0.99)[3].item<double>(), dt[3].item<double>());
}

TEST(TimeSamplingTest, RatioScheduleHalvesTheGapEachStage) {
  EXPECT_DOUBLE_EQ(ScheduleRatio(0, 2, 0.999), 0.5);
  EXPECT_DOUBLE_EQ(ScheduleRatio(1, 2, 0.999), 0.75);
  EXPECT_DOUBLE_EQ(ScheduleRatio(2, 2, 0.999), 0.875);
  EXPECT_DOUBLE_EQ(ScheduleRatio(1, 4, 0.999), 1 - 1.0 / 16);
  EXPECT_DOUBLE_EQ(ScheduleRatio(20, 2, 0.999), 0.999);  // clipped
}

TEST(TimeSamplingTest, BoundaryMaskSetsExactlyItsShare) {
  torch::manual_seed(3);
  const torch::Tensor a = BoundaryMask(64, 0.25);
  const torch::Tensor b = BoundaryMask(64, 0.25);
  EXPECT_EQ(a.scalar_type(), torch::kBool);
  EXPECT_EQ(a.sum().item<int64_t>(), 16);
  EXPECT_EQ(b.sum().item<int64_t>(), 16);
  EXPECT_FALSE(torch::equal(a, b));                            // positions are random
  EXPECT_EQ(BoundaryMask(10, 0.05).sum().item<int64_t>(), 0);  // floor(0.5)
  EXPECT_EQ(BoundaryMask(40, 0.05).sum().item<int64_t>(), 2);
}

// EDM's training noise levels: log sigma ~ N(P_mean, P_std^2), untruncated.
TEST(TimeSamplingTest, DiffusionTimesAreLogNormal) {
  torch::manual_seed(5);
  const torch::Tensor sigma = SampleLogNormalTimes(200000, -1.2, 1.2);
  ASSERT_EQ(sigma.sizes(), (std::vector<int64_t>{200000}));
  EXPECT_GT(sigma.min().item<double>(), 0.0);
  const torch::Tensor log_sigma = sigma.log();
  EXPECT_NEAR(log_sigma.mean().item<double>(), -1.2, 0.01);
  EXPECT_NEAR(log_sigma.std().item<double>(), 1.2, 0.01);
  // Untruncated: both 4-sigma tails are reached.
  EXPECT_LT(log_sigma.min().item<double>(), -1.2 - 4 * 1.2);
  EXPECT_GT(log_sigma.max().item<double>(), -1.2 + 4 * 1.2);
}

}  // namespace
}  // namespace tcm
