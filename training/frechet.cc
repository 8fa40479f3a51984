#include "training/frechet.h"

#include <torch/torch.h>

#include <algorithm>

namespace tcm {
namespace {

// Square root of a symmetric positive semi-definite matrix.
torch::Tensor SymmetricSqrt(const torch::Tensor& m) {
  auto [eigenvalues, eigenvectors] = torch::linalg_eigh(m);
  return eigenvectors.mul(eigenvalues.clamp_min(0).sqrt()).matmul(eigenvectors.transpose(0, 1));
}

}  // namespace

FeatureStatistics ComputeFeatureStatistics(const torch::Tensor& features) {
  torch::NoGradGuard no_grad;
  torch::Tensor x = features.to(torch::kFloat64);
  FeatureStatistics stats;
  stats.count = x.size(0);
  stats.mean = x.mean(0);
  torch::Tensor centred = x - stats.mean;
  stats.covariance = centred.transpose(0, 1).matmul(centred).div(double(stats.count - 1));
  return stats;
}

double FrechetDistance(const FeatureStatistics& a, const FeatureStatistics& b) {
  torch::NoGradGuard no_grad;
  const torch::Tensor sqrt_a = SymmetricSqrt(a.covariance);
  torch::Tensor product = sqrt_a.matmul(b.covariance).matmul(sqrt_a);
  product = (product + product.transpose(0, 1)) / 2;  // symmetric up to rounding
  const double trace_sqrt_product = torch::linalg_eigvalsh(product).clamp_min(0).sqrt().sum().item<double>();
  const double mean_term = (a.mean - b.mean).square().sum().item<double>();
  const double distance =
      mean_term + a.covariance.trace().item<double>() + b.covariance.trace().item<double>() - 2 * trace_sqrt_product;
  return std::max(distance, 0.0);  // rounding can leave a tiny negative value for equal statistics
}

}  // namespace tcm
