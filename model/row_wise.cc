#include "model/row_wise.h"

#include <torch/torch.h>

#include <vector>

namespace tcm {

torch::Tensor RowWiseLinear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias) {
  if (torch::GradMode::is_enabled() || x.dim() != 2 || !x.is_cpu()) return torch::linear(x, w, bias);
  std::vector<torch::Tensor> rows;
  rows.reserve(x.size(0));
  for (int64_t r = 0; r < x.size(0); ++r) rows.push_back(torch::mv(w, x[r]));
  torch::Tensor out = torch::stack(rows);
  return bias.defined() ? out.add_(bias) : out;
}

}  // namespace tcm
