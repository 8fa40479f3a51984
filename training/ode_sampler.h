// EDM's deterministic Heun sampler (Karras et al. 2022, Algorithm 1 without
// churn): the many-step reference a diffusion model is judged by. tcm-eval
// uses it to measure the diffusion pre-training that stage 1 starts from.
#ifndef TCM_TRAINING_ODE_SAMPLER_H_
#define TCM_TRAINING_ODE_SAMPLER_H_

#include <torch/types.h>

#include <functional>
#include <vector>

namespace tcm {

struct OdeSamplerOptions {
  int steps = 18;  // noise levels before 0; 2 * steps - 1 network evaluations
  double sigma_min = 0.002;
  double sigma_max = 80;
  double rho = 7;
};

// EDM's noise levels: `steps` values from sigma_max down to sigma_min spaced
// uniformly in sigma^(1/rho), then 0. Size steps + 1.
std::vector<double> KarrasSigmas(const OdeSamplerOptions& options);

// A denoiser D(x, sigma) with sigma one value for the whole batch.
using DenoiseFn = std::function<torch::Tensor(const torch::Tensor& x, double sigma)>;

// Integrates the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma
// from `x_start` (noise scaled to sigma_max) to sigma 0: Euler steps with
// Heun's correction on every step but the last.
torch::Tensor SolveProbabilityFlow(const DenoiseFn& denoise, const torch::Tensor& x_start,
                                   const OdeSamplerOptions& options);

}  // namespace tcm

#endif  // TCM_TRAINING_ODE_SAMPLER_H_
