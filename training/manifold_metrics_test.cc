#include "training/manifold_metrics.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>
#include <stdexcept>
#include <vector>

namespace tcm {
namespace {

torch::Tensor Column(std::vector<double> values) { return torch::tensor(values, torch::kFloat64).unsqueeze(1); }

TEST(ManifoldMetricsTest, RadiiAreTheKthNearestOtherPoint) {
  // On a line: 0, 1, 3, 7.
  const torch::Tensor points = Column({0, 1, 3, 7});
  EXPECT_TRUE(torch::allclose(BuildManifold(points, 1).radii, torch::tensor({1.0, 1.0, 2.0, 4.0}, torch::kFloat64)));
  EXPECT_TRUE(torch::allclose(BuildManifold(points, 2).radii, torch::tensor({3.0, 2.0, 3.0, 6.0}, torch::kFloat64)));
  EXPECT_TRUE(torch::allclose(BuildManifold(points, 3).radii, torch::tensor({7.0, 6.0, 4.0, 7.0}, torch::kFloat64)));
  EXPECT_THROW(BuildManifold(points, 4), std::invalid_argument);
  EXPECT_THROW(BuildManifold(points, 0), std::invalid_argument);
}

TEST(ManifoldMetricsTest, ShareInsideCountsQueriesWithinAnyBall) {
  const Manifold manifold = BuildManifold(Column({0, 1, 3, 7}), 1);      // balls [-1,1], [0,2], [1,5], [3,11]
  EXPECT_DOUBLE_EQ(ShareInside(Column({-1, 2, 5, 11}), manifold), 1.0);  // the edges count as inside
  EXPECT_DOUBLE_EQ(ShareInside(Column({-1.5, 11.5, 4, 20}), manifold), 0.25);
}

TEST(ManifoldMetricsTest, IdenticalSetsScoreOneAndDisjointOnesZero) {
  torch::manual_seed(0);
  const torch::Tensor real = torch::randn({300, 8});
  const Manifold manifold = BuildManifold(real, kManifoldNeighbours);
  const PrecisionRecall same = ComputePrecisionRecall(manifold, real, kManifoldNeighbours);
  EXPECT_DOUBLE_EQ(same.precision, 1.0);
  EXPECT_DOUBLE_EQ(same.recall, 1.0);
  const PrecisionRecall apart = ComputePrecisionRecall(manifold, real + 100, kManifoldNeighbours);
  EXPECT_DOUBLE_EQ(apart.precision, 0.0);
  EXPECT_DOUBLE_EQ(apart.recall, 0.0);
}

TEST(ManifoldMetricsTest, ACollapsedGeneratorIsPreciseButCoversLittle) {
  // Every sample is the real point 0: all inside the real manifold, and the
  // samples' balls have radius 0, so they cover that one real point only.
  const Manifold real = BuildManifold(Column({0, 1, 3, 7}), 1);
  const PrecisionRecall collapsed = ComputePrecisionRecall(real, Column({0, 0, 0, 0}), 1);
  EXPECT_DOUBLE_EQ(collapsed.precision, 1.0);
  EXPECT_DOUBLE_EQ(collapsed.recall, 0.25);
}

TEST(ManifoldMetricsTest, BlocksOfRowsAgreeWithTheWholeDistanceMatrix) {
  // Against brute force over all pairs, with more points than one block of
  // rows holds (a block is about 8 M distances: 2097 rows of 4000).
  torch::manual_seed(1);
  const torch::Tensor real = torch::randn({4000, 4}, torch::kFloat64);
  const torch::Tensor generated = torch::randn({4500, 4}, torch::kFloat64) * 1.3 + 0.2;
  const int k = kManifoldNeighbours;
  const Manifold manifold = BuildManifold(real, k);
  torch::Tensor d = torch::cdist(real, real);
  d.fill_diagonal_(std::numeric_limits<double>::infinity());
  const torch::Tensor radii = std::get<0>(d.kthvalue(k, 1));
  EXPECT_TRUE(torch::allclose(manifold.radii, radii, 1e-9, 1e-9));
  const double brute_precision =
      torch::cdist(generated, real).le(radii.unsqueeze(0)).any(1).to(torch::kFloat64).mean().item<double>();
  const double precision = ShareInside(generated, manifold);
  EXPECT_DOUBLE_EQ(precision, brute_precision);
  EXPECT_GT(precision, 0.1);
  EXPECT_LT(precision, 1.0);
}

}  // namespace
}  // namespace tcm
