// Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019) of
// generated features against real ones. Each set's manifold is the union of
// balls around its points, a point's ball reaching to its k-th nearest
// neighbour in its own set. Precision is the share of generated points inside
// the real manifold (how many samples look like data); recall is the share of
// real points inside the generated manifold (how much of the data the samples
// cover). FD mixes the two; these separate a generator that makes only
// prototypical images (high precision, low recall) from one as varied as the
// data. Distances are Euclidean, computed in float64, a block of rows at a
// time (memory bounded; time grows with the product of the two counts).
#ifndef TCM_TRAINING_MANIFOLD_METRICS_H_
#define TCM_TRAINING_MANIFOLD_METRICS_H_

#include <torch/types.h>

#include <cstdint>

namespace tcm {

// The neighbour count of the paper's experiments.
constexpr int kManifoldNeighbours = 3;

struct Manifold {
  torch::Tensor points;  // float64 [N, D]
  torch::Tensor radii;   // float64 [N]: each point's distance to its k-th nearest other point
};

// The manifold of `points` ([N, D], any float type); needs N > k >= 1.
Manifold BuildManifold(const torch::Tensor& points, int k);

// The share of `queries` ([M, D]) within at least one ball of `manifold`.
double ShareInside(const torch::Tensor& queries, const Manifold& manifold);

struct PrecisionRecall {
  double precision = 0;
  double recall = 0;
};

// Precision and recall of `generated` ([M, D], M > k) against the manifold
// of the real features, whose own k must be `k`.
PrecisionRecall ComputePrecisionRecall(const Manifold& real, const torch::Tensor& generated, int k);

}  // namespace tcm

#endif  // TCM_TRAINING_MANIFOLD_METRICS_H_
