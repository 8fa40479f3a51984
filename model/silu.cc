#include "model/silu.h"

#include <torch/torch.h>

namespace tcm {
namespace {

bool SigmoidProductIsFaster(const torch::Tensor& x) {
  return x.scalar_type() == torch::kBFloat16 && x.is_cpu() && !torch::GradMode::is_enabled();
}

}  // namespace

torch::Tensor Silu(const torch::Tensor& x) {
  if (!SigmoidProductIsFaster(x)) return torch::silu(x);
  return torch::sigmoid(x).mul_(x);
}

torch::Tensor& Silu_(torch::Tensor& x) {
  if (!SigmoidProductIsFaster(x)) return torch::silu_(x);
  return x.mul_(torch::sigmoid(x));
}

}  // namespace tcm
