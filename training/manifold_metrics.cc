#include "training/manifold_metrics.h"

#include <torch/torch.h>

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <vector>

namespace tcm {
namespace {

// Distances computed at once: a block of rows against all N points holds at
// most this many float64 (64 MB, a few times that with its temporaries).
constexpr int64_t kBlockElements = int64_t(8) << 20;

int64_t RowsPerBlock(int64_t points) { return std::max<int64_t>(1, kBlockElements / std::max<int64_t>(points, 1)); }

// Squared distances of each row of `a` to each row of `b`, both float64.
torch::Tensor SquaredDistances(const torch::Tensor& a, const torch::Tensor& b) {
  const torch::Tensor a2 = a.square().sum(1, /*keepdim=*/true);
  const torch::Tensor b2 = b.square().sum(1).unsqueeze(0);
  return (a2 + b2 - 2 * a.matmul(b.transpose(0, 1))).clamp_min(0);
}

}  // namespace

Manifold BuildManifold(const torch::Tensor& points, int k) {
  const int64_t n = points.size(0);
  if (k < 1 || n <= k) throw std::invalid_argument("BuildManifold: needs more points than neighbours");
  const torch::Tensor p = points.to(torch::kFloat64).contiguous();
  std::vector<torch::Tensor> radii;
  const int64_t block = RowsPerBlock(n);
  for (int64_t start = 0; start < n; start += block) {
    const int64_t rows = std::min(block, n - start);
    torch::Tensor d2 = SquaredDistances(p.narrow(0, start, rows), p);
    // A point is not its own neighbour: block row i is point start + i.
    d2.diagonal(start, 0, 1).fill_(std::numeric_limits<double>::infinity());
    radii.push_back(std::get<0>(d2.kthvalue(k, 1)).sqrt());
  }
  return {p, torch::cat(radii)};
}

double ShareInside(const torch::Tensor& queries, const Manifold& manifold) {
  const int64_t m = queries.size(0);
  if (m == 0) return 0;
  const torch::Tensor q = queries.to(torch::kFloat64).contiguous();
  const torch::Tensor r2 = manifold.radii.square().unsqueeze(0);
  int64_t inside = 0;
  const int64_t block = RowsPerBlock(manifold.points.size(0));
  for (int64_t start = 0; start < m; start += block) {
    const int64_t rows = std::min(block, m - start);
    const torch::Tensor d2 = SquaredDistances(q.narrow(0, start, rows), manifold.points);
    inside += d2.le(r2).any(1).sum().item<int64_t>();
  }
  return double(inside) / m;
}

PrecisionRecall ComputePrecisionRecall(const Manifold& real, const torch::Tensor& generated, int k) {
  return {ShareInside(generated, real), ShareInside(real.points, BuildManifold(generated, k))};
}

}  // namespace tcm
