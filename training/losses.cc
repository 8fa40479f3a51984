#include "training/losses.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "model/unet.h"

namespace tcm {
namespace {

torch::Tensor Rows(const torch::Tensor& t, const torch::Tensor& mask) { return t.index({mask}); }

torch::Tensor WeightOf(LossWeighting weighting, const torch::Tensor& t, const torch::Tensor& dt, double sigma_data) {
  switch (weighting) {
    case LossWeighting::kDefault:
      return 1 / dt;
    case LossWeighting::kCout:
      return 1 / (t * sigma_data * (t.square() + sigma_data * sigma_data).rsqrt());
    case LossWeighting::kCoutSquared:
      return 1 / (t * sigma_data * (t.square() + sigma_data * sigma_data).rsqrt()).square();
    case LossWeighting::kSqrt:
      return dt.rsqrt();
    case LossWeighting::kOne:
      return torch::ones_like(t);
  }
  return torch::ones_like(t);
}

}  // namespace

torch::Tensor DiffusionLoss(Denoiser& net, const torch::Tensor& images, const torch::Tensor& labels,
                            const DiffusionLossOptions& options) {
  const double sd = net.config().sigma_data();
  const torch::Tensor sigma = SampleLogNormalTimes(images.size(0), options.p_mean, options.p_std);
  const torch::Tensor weight = (sigma.square() + sd * sd) / (sigma * sd).square();
  const torch::Tensor noisy = images + torch::randn_like(images) * sigma.view({-1, 1, 1, 1});
  const torch::Tensor denoised = net.forward(noisy, sigma, labels);
  return weight * (denoised - images).square().mean({1, 2, 3});
}

absl::StatusOr<LossWeighting> ParseLossWeighting(const std::string& name, const std::string& flag) {
  if (name == "default") return LossWeighting::kDefault;
  if (name == "cout") return LossWeighting::kCout;
  if (name == "cout_sq") return LossWeighting::kCoutSquared;
  if (name == "sqrt") return LossWeighting::kSqrt;
  if (name == "one") return LossWeighting::kOne;
  return absl::InvalidArgumentError(
      absl::StrCat(flag, ": must be one of default, cout, cout_sq, sqrt, one; got \"", name, "\""));
}

torch::Tensor ComposedTarget(Denoiser& student, const TruncatedComposition& tcm, const torch::Tensor& x,
                             const torch::Tensor& sigma, const torch::Tensor& labels) {
  torch::NoGradGuard no_grad;
  SkipForcedWeightNormalization keep_weights;
  const torch::Tensor below = sigma < tcm.transition_t;
  if (tcm.teacher == nullptr || !below.any().item<bool>()) return student.forward(x, sigma, labels);
  // As the reference's TCMPrecond: the teacher sees the whole batch from the
  // same generator state as the student, so both draw the same dropout masks.
  const torch::Tensor dropout_masks = CpuGeneratorState();
  const torch::Tensor from_teacher = tcm.teacher->forward(x, sigma, labels);
  SetCpuGeneratorState(dropout_masks);
  const torch::Tensor from_student = student.forward(x, sigma, labels);
  return torch::where(below.view({-1, 1, 1, 1}), from_teacher, from_student);
}

ConsistencyLossTerms ConsistencyLoss(Denoiser& net, const TruncatedComposition& tcm, const torch::Tensor& images,
                                     const torch::Tensor& labels, double ratio, const ConsistencyLossOptions& options) {
  const int64_t n = images.size(0);
  torch::Tensor t = SampleTimes(n, options.time);
  torch::Tensor boundary = torch::zeros({n}, torch::kBool);
  if (tcm.teacher != nullptr) {
    boundary = BoundaryMask(n, options.boundary_prob);
    t = torch::where(boundary, torch::full_like(t, tcm.transition_t + 1e-8), t);
  }
  const torch::Tensor dt = DeltaSigmoid(t, ratio);
  const torch::Tensor r = t - dt;
  const torch::Tensor eps = torch::randn_like(images);
  const torch::Tensor y_t = images + eps * t.view({-1, 1, 1, 1});
  const torch::Tensor y_r = images + eps * r.view({-1, 1, 1, 1});

  const torch::Tensor dropout_masks = CpuGeneratorState();
  const torch::Tensor d_yt = net.forward(y_t, t, labels);
  SetCpuGeneratorState(dropout_masks);  // the target pass draws the same masks
  torch::Tensor d_yr = torch::nan_to_num(ComposedTarget(net, tcm, y_r, r, labels));
  d_yr = torch::where((r > 0).view({-1, 1, 1, 1}), d_yr, images);

  const torch::Tensor distance = (d_yt - d_yr).flatten(1).norm(2, 1);
  const torch::Tensor unweighted =
      options.huber_c > 0 ? (distance.square() + options.huber_c * options.huber_c).sqrt() - options.huber_c : distance;
  const torch::Tensor loss = unweighted * WeightOf(options.weighting, t, dt, options.sigma_data);
  const torch::Tensor regular = boundary.logical_not();
  return {Rows(loss, regular), Rows(loss, boundary), Rows(unweighted, regular)};
}

}  // namespace tcm
