#include "training/ode_sampler.h"

#include <cmath>
#include <stdexcept>

namespace tcm {

std::vector<double> KarrasSigmas(const OdeSamplerOptions& options) {
  if (options.steps < 1) throw std::invalid_argument("OdeSamplerOptions.steps must be at least 1");
  const double max_root = std::pow(options.sigma_max, 1 / options.rho);
  const double min_root = std::pow(options.sigma_min, 1 / options.rho);
  std::vector<double> sigmas;
  for (int i = 0; i < options.steps; ++i) {
    const double fraction = options.steps == 1 ? 0.0 : double(i) / (options.steps - 1);
    sigmas.push_back(std::pow(max_root + fraction * (min_root - max_root), options.rho));
  }
  sigmas.push_back(0);
  return sigmas;
}

torch::Tensor SolveProbabilityFlow(const DenoiseFn& denoise, const torch::Tensor& x_start,
                                   const OdeSamplerOptions& options) {
  const std::vector<double> sigmas = KarrasSigmas(options);
  torch::Tensor x = x_start;
  for (size_t i = 0; i + 1 < sigmas.size(); ++i) {
    const double sigma = sigmas[i], next = sigmas[i + 1];
    const torch::Tensor slope = (x - denoise(x, sigma)) / sigma;
    torch::Tensor x_next = x + (next - sigma) * slope;
    if (next > 0) {
      const torch::Tensor next_slope = (x_next - denoise(x_next, next)) / next;
      x_next = x + (next - sigma) * 0.5 * (slope + next_slope);
    }
    x = x_next;
  }
  return x;
}

}  // namespace tcm
