// Noise-level (time) sampling and the consistency gap of TCM training, after
// the reference `training/loss.py` and `torch_utils/misc.py`. Every random
// draw comes from LibTorch's default CPU generator, so a checkpoint that saves
// its state resumes the same sequence.
#ifndef TCM_TRAINING_TIME_SAMPLING_H_
#define TCM_TRAINING_TIME_SAMPLING_H_

#include <torch/types.h>

#include <string>

#include "absl/status/statusor.h"

namespace tcm {

// Distribution of log t, truncated to [log t_lower, log t_upper].
struct TimeDistribution {
  enum class Kind { kNormal, kStudentT };
  Kind kind = Kind::kNormal;
  double mean = -1.1;  // location of log t (P_mean)
  double std = 2.0;    // scale of log t (P_std)
  double df = 2.0;     // degrees of freedom (Student-t only)
  double t_lower = 0.002;
  double t_upper = 80.0;
};

// The default CPU generator's state, and restoring it: checkpoints save it,
// and consistency training rewinds it to draw the same dropout masks twice.
torch::Tensor CpuGeneratorState();
void SetCpuGeneratorState(const torch::Tensor& state);

// "normal" or "t"; anything else is an InvalidArgument naming `flag`.
absl::StatusOr<TimeDistribution::Kind> ParseTimeDistributionKind(const std::string& name, const std::string& flag);

// Standard normal and Student-t (df > 0) cumulative distribution functions.
double NormalCdf(double x);
double StudentTCdf(double x, double df);

// n noise levels t (float32 [n]) with log t drawn from `dist` by inverting its
// CDF between the truncation bounds (as scipy's truncnorm / the reference's
// truncated_t do).
torch::Tensor SampleTimes(int64_t n, const TimeDistribution& dist);

// Untruncated log-normal noise levels of EDM denoising score matching:
// t = exp(p_mean + p_std * N(0, 1)).
torch::Tensor SampleLogNormalTimes(int64_t n, double p_mean, double p_std);

// ECT's gap dt(t) = t (1 - ratio) (1 + 8 sigmoid(-t)), reduced so that
// r = t - dt stays >= 1e-6.
torch::Tensor DeltaSigmoid(const torch::Tensor& t, double ratio);

// The gap schedule: ratio = 1 - 1 / q^(stage + 1), clipped to ratio_limit.
double ScheduleRatio(int64_t stage, double q, double ratio_limit);

// Boolean [n] with exactly floor(n * prob) rows set, at random positions: the
// rows that TCM's boundary loss moves to t = t'.
torch::Tensor BoundaryMask(int64_t n, double prob);

}  // namespace tcm

#endif  // TCM_TRAINING_TIME_SAMPLING_H_
