#include "training/ode_sampler.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

namespace tcm {
namespace {

TEST(KarrasSigmas, RunsFromSigmaMaxToSigmaMinThenZero) {
  OdeSamplerOptions options;
  options.steps = 18;
  const std::vector<double> sigmas = KarrasSigmas(options);
  ASSERT_EQ(sigmas.size(), 19u);
  EXPECT_DOUBLE_EQ(sigmas.front(), 80);
  EXPECT_NEAR(sigmas[17], 0.002, 1e-12);
  EXPECT_EQ(sigmas.back(), 0);
  for (size_t i = 0; i + 2 < sigmas.size(); ++i) EXPECT_GT(sigmas[i], sigmas[i + 1]);
  // Uniform in sigma^(1/rho).
  const double gap = std::pow(sigmas[0], 1 / 7.0) - std::pow(sigmas[1], 1 / 7.0);
  EXPECT_NEAR(std::pow(sigmas[8], 1 / 7.0) - std::pow(sigmas[9], 1 / 7.0), gap, 1e-9);
}

TEST(KarrasSigmas, RejectsZeroSteps) {
  OdeSamplerOptions options;
  options.steps = 0;
  EXPECT_THROW(KarrasSigmas(options), std::invalid_argument);
}

// For data ~ N(0, s^2) the ideal denoiser is x s^2 / (sigma^2 + s^2) and the
// probability-flow ODE carries x(sigma) = z sqrt(sigma^2 + s^2) to z s.
torch::Tensor SolveGaussian(double s, const torch::Tensor& z, int steps) {
  const DenoiseFn gaussian = [s](const torch::Tensor& x, double sigma) {
    return x * (s * s / (sigma * sigma + s * s));
  };
  OdeSamplerOptions options;
  options.steps = steps;
  return SolveProbabilityFlow(gaussian, z * std::sqrt(80.0 * 80.0 + s * s), options);
}

TEST(SolveProbabilityFlow, MatchesHeunStepsComputedByHand) {
  // The same 18 Heun steps in double precision, computed independently for
  // z = 1, s = 0.5: Heun's discretisation error is 5.5% on this ODE.
  const torch::Tensor z = torch::tensor({1.0, -2.0}, torch::kFloat64);
  const torch::Tensor x0 = SolveGaussian(0.5, z, 18);
  EXPECT_NEAR(x0[0].item<double>(), 0.527634942069104, 1e-12);
  EXPECT_NEAR(x0[1].item<double>(), -2 * 0.527634942069104, 1e-12);
}

TEST(SolveProbabilityFlow, ConvergesToTheExactSolutionAtSecondOrder) {
  const torch::Tensor z = torch::randn({64}, torch::kFloat64);
  const double s = 0.5;
  const double error40 = (SolveGaussian(s, z, 40) - z * s).abs().max().item<double>();
  const double error80 = (SolveGaussian(s, z, 80) - z * s).abs().max().item<double>();
  EXPECT_LT(error80, 0.35 * error40);  // second order: a quarter, give or take the uneven spacing
  EXPECT_LT((SolveGaussian(s, z, 400) - z * s).abs().max().item<double>(), 1e-3 * z.abs().max().item<double>());
}

TEST(SolveProbabilityFlow, OneStepIsTheDenoiserAtSigmaMax) {
  const DenoiseFn halve = [](const torch::Tensor& x, double) { return x * 0.5; };
  OdeSamplerOptions options;
  options.steps = 1;
  const torch::Tensor x = torch::ones({3});
  // Euler to sigma 0 lands on D(x, sigma_max).
  EXPECT_TRUE(torch::allclose(SolveProbabilityFlow(halve, x, options), x * 0.5));
}

}  // namespace
}  // namespace tcm
