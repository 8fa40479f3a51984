// The Fréchet distance between Gaussians fitted to two sets of features (the
// FID recipe, for any feature extractor):
//   FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1^1/2 S2 S1^1/2))
// Computed in double precision with symmetric eigendecompositions.
#ifndef TCM_TRAINING_FRECHET_H_
#define TCM_TRAINING_FRECHET_H_

#include <torch/types.h>

#include <cstdint>

namespace tcm {

struct FeatureStatistics {
  torch::Tensor mean;        // float64 [D]
  torch::Tensor covariance;  // float64 [D, D], unbiased (divides by N - 1)
  int64_t count = 0;         // N, the number of feature rows
};

// Mean and covariance of `features` ([N, D], any float type, N >= 2).
FeatureStatistics ComputeFeatureStatistics(const torch::Tensor& features);

// Fréchet distance of two statistics of the same dimension D. Symmetric and
// >= 0; tiny negative eigenvalues from rounding count as 0.
double FrechetDistance(const FeatureStatistics& a, const FeatureStatistics& b);

}  // namespace tcm

#endif  // TCM_TRAINING_FRECHET_H_
