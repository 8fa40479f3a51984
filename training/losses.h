// The training objectives of the three stages, after the reference
// `training/loss.py` (ECMLoss) and EDM's EDMLoss. Random draws (times, noise,
// boundary rows, dropout) come from LibTorch's default CPU generator.
#ifndef TCM_TRAINING_LOSSES_H_
#define TCM_TRAINING_LOSSES_H_

#include <torch/types.h>

#include <string>

#include "absl/status/statusor.h"
#include "model/denoiser.h"
#include "training/time_sampling.h"

namespace tcm {

// EDM denoising score matching: log t ~ N(p_mean, p_std^2), per-image loss
// lambda(t) * mean((D(y + t n, t) - y)^2) with lambda(t) = (t^2 + s^2) / (t s)^2.
struct DiffusionLossOptions {
  double p_mean = -1.2;
  double p_std = 1.2;
};
torch::Tensor DiffusionLoss(Denoiser& net, const torch::Tensor& images, const torch::Tensor& labels,
                            const DiffusionLossOptions& options);

enum class LossWeighting { kDefault, kCout, kCoutSquared, kSqrt, kOne };

// "default" (1 / dt), "cout", "cout_sq", "sqrt" (1 / sqrt(dt)), "one".
absl::StatusOr<LossWeighting> ParseLossWeighting(const std::string& name, const std::string& flag);

struct ConsistencyLossOptions {
  TimeDistribution time;
  double huber_c = 0.0;  // pseudo-Huber constant; 0 = plain L2 distance
  LossWeighting weighting = LossWeighting::kDefault;
  double sigma_data = 0.5;
  // Stage 2 only (a teacher is given): share of each batch moved to t = t'.
  double boundary_prob = 0.05;
};

// TCM's consistency function during stage 2: the trained network at noise
// levels >= t', the frozen stage-1 network (no gradient) below. As in the
// reference, the teacher stays in training mode with the student's dropout.
struct TruncatedComposition {
  Denoiser* teacher = nullptr;  // null in stage 1
  double transition_t = 1.0;    // t'
};

// Evaluates the composition for the target pass (no gradient): rows with
// sigma >= t' through `student`, the others through the teacher. When any row
// is below t', both networks run on the whole batch from the same generator
// state (the same dropout masks), as the reference's TCMPrecond does.
torch::Tensor ComposedTarget(Denoiser& student, const TruncatedComposition& tcm, const torch::Tensor& x,
                             const torch::Tensor& sigma, const torch::Tensor& labels);

struct ConsistencyLossTerms {
  torch::Tensor loss;        // weighted per-row loss of the regular rows
  torch::Tensor boundary;    // weighted per-row loss of the boundary rows (stage 2; may be empty)
  torch::Tensor unweighted;  // distance per regular row
};

// One consistency-training objective (stage 1 without a teacher, stage 2 with):
// t from `options.time`, r = t - dt(t, ratio), shared noise, the gradient
// pass D(y + t n, t) and the no-grad target pass at r with the same dropout
// mask (the generator state is restored between them), target y where r = 0.
ConsistencyLossTerms ConsistencyLoss(Denoiser& net, const TruncatedComposition& tcm, const torch::Tensor& images,
                                     const torch::Tensor& labels, double ratio, const ConsistencyLossOptions& options);

}  // namespace tcm

#endif  // TCM_TRAINING_LOSSES_H_
