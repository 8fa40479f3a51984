#include "training/frechet.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

namespace tcm {
namespace {

FeatureStatistics Gaussian(torch::Tensor mean, torch::Tensor covariance) {
  return {mean.to(torch::kFloat64), covariance.to(torch::kFloat64), 1000};
}

// A random symmetric positive definite D x D matrix.
torch::Tensor RandomCovariance(int64_t d) {
  torch::Tensor a = torch::randn({d, d}, torch::kFloat64);
  return a.matmul(a.transpose(0, 1)) / d + 0.1 * torch::eye(d, torch::kFloat64);
}

TEST(FrechetTest, StatisticsAreTheMeanAndUnbiasedCovariance) {
  torch::Tensor x = torch::tensor({{1.0, 2.0}, {3.0, 6.0}, {5.0, 4.0}});
  FeatureStatistics s = ComputeFeatureStatistics(x);
  EXPECT_EQ(s.count, 3);
  EXPECT_EQ(s.mean.scalar_type(), torch::kFloat64);
  EXPECT_TRUE(torch::allclose(s.mean, torch::tensor({3.0, 4.0}, torch::kFloat64)));
  // Deviations (-2,-2), (0,2), (2,0): sums of products 8, 4, 8, divided by N - 1 = 2.
  EXPECT_TRUE(torch::allclose(s.covariance, torch::tensor({{4.0, 2.0}, {2.0, 4.0}}, torch::kFloat64)));
}

TEST(FrechetTest, ASetIsAtDistanceZeroFromItself) {
  torch::manual_seed(0);
  torch::Tensor features = torch::randn({500, 16}).matmul(torch::randn({16, 16}));
  FeatureStatistics s = ComputeFeatureStatistics(features);
  EXPECT_NEAR(FrechetDistance(s, s), 0.0, 1e-8);
  // Rank-deficient covariance (fewer rows than dimensions, constant columns): still about zero.
  torch::Tensor few = torch::relu(torch::randn({10, 32}));
  few.narrow(1, 0, 5).zero_();
  FeatureStatistics r = ComputeFeatureStatistics(few);
  EXPECT_NEAR(FrechetDistance(r, r), 0.0, 1e-6);
}

TEST(FrechetTest, DiagonalGaussiansMatchTheClosedForm) {
  // FD = |mu1 - mu2|^2 + sum_i (sqrt(s1_i) - sqrt(s2_i))^2 for diagonal covariances.
  torch::Tensor mu1 = torch::tensor({0.0, 1.0, -2.0}), mu2 = torch::tensor({1.0, 1.0, 0.0});
  torch::Tensor s1 = torch::tensor({1.0, 4.0, 9.0}), s2 = torch::tensor({4.0, 1.0, 9.0});
  const double expected = (1 + 0 + 4) + (1 + 1 + 0);
  EXPECT_NEAR(FrechetDistance(Gaussian(mu1, torch::diag(s1)), Gaussian(mu2, torch::diag(s2))), expected, 1e-9);
}

TEST(FrechetTest, NonCommutingTwoByTwoCovariancesMatchTheClosedForm) {
  // For 2x2 PSD M: tr(sqrt(M)) = sqrt(tr(M) + 2 sqrt(det(M))); here
  // M = S1^1/2 S2 S1^1/2, so tr(M) = tr(S1 S2) and det(M) = det(S1) det(S2).
  torch::Tensor s1 = torch::tensor({{2.0, 0.5}, {0.5, 1.0}}, torch::kFloat64);
  torch::Tensor s2 = torch::tensor({{1.0, -0.3}, {-0.3, 3.0}}, torch::kFloat64);
  torch::Tensor zero = torch::zeros({2}, torch::kFloat64);
  const double det = (2.0 * 1.0 - 0.25) * (3.0 - 0.09);
  const double trace_s1s2 = s1.matmul(s2).trace().item<double>();
  const double expected = 3.0 + 4.0 - 2 * std::sqrt(trace_s1s2 + 2 * std::sqrt(det));
  EXPECT_NEAR(FrechetDistance(Gaussian(zero, s1), Gaussian(zero, s2)), expected, 1e-9);
}

TEST(FrechetTest, IsSymmetric) {
  torch::manual_seed(1);
  FeatureStatistics a = Gaussian(torch::randn({12}), RandomCovariance(12));
  FeatureStatistics b = Gaussian(torch::randn({12}), RandomCovariance(12));
  const double ab = FrechetDistance(a, b), ba = FrechetDistance(b, a);
  EXPECT_GT(ab, 0.1);
  EXPECT_NEAR(ab, ba, 1e-9 * ab);
}

TEST(FrechetTest, SamplesOfTwoGaussiansApproachTheirDistance) {
  torch::manual_seed(2);
  const int64_t n = 20000;
  torch::Tensor x = torch::randn({n, 4}, torch::kFloat64) * torch::tensor({1.0, 2.0, 1.0, 0.5}, torch::kFloat64);
  torch::Tensor y = torch::randn({n, 4}, torch::kFloat64) + torch::tensor({1.0, 0.0, 0.0, 0.0}, torch::kFloat64);
  // |mu|^2 = 1; sqrt-variance gaps: (1-1)^2 + (2-1)^2 + 0 + (0.5-1)^2 = 1.25.
  const double fd = FrechetDistance(ComputeFeatureStatistics(x), ComputeFeatureStatistics(y));
  EXPECT_NEAR(fd, 2.25, 0.1);
}

}  // namespace
}  // namespace tcm
