#include "model/batch_invariant.h"

#include <ATen/record_function.h>
#include <torch/torch.h>

#include <vector>

#include "model/row_linear_kernel.h"

namespace tcm {

torch::Tensor RowWiseLinear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias) {
  if (torch::GradMode::is_enabled() || x.dim() != 2 || !x.is_cpu()) return torch::linear(x, w, bias);
  const auto f32 = [](const torch::Tensor& t) { return !t.defined() || t.scalar_type() == torch::kFloat32; };
  if (f32(x) && f32(w) && f32(bias) && w.dim() == 2 && w.size(1) == x.size(1)) {
    RECORD_FUNCTION("tcm::linear_rows", std::vector<c10::IValue>{});  // named in tcm-model-bench --profile
    const torch::Tensor xc = x.contiguous(), wt = w.t().contiguous();
    const torch::Tensor b = bias.defined() ? bias.contiguous() : bias;
    torch::Tensor out = torch::empty({x.size(0), w.size(0)}, x.options());
    LinearRows(xc.data_ptr<float>(), x.size(0), x.size(1), wt.data_ptr<float>(), w.size(0),
               b.defined() ? b.data_ptr<float>() : nullptr, out.data_ptr<float>());
    return out;
  }
  std::vector<torch::Tensor> rows;
  rows.reserve(x.size(0));
  for (int64_t r = 0; r < x.size(0); ++r) rows.push_back(torch::mv(w, x[r]));
  torch::Tensor out = torch::stack(rows);
  return bias.defined() ? out.add_(bias) : out;
}

torch::Tensor BatchInvariantConv2d(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias,
                                   int64_t stride, int64_t padding, int64_t dilation, int64_t groups) {
  const bool onednn = !torch::GradMode::is_enabled() && x.is_cpu() && x.dim() == 4 &&
                      x.scalar_type() == torch::kFloat32 && w.scalar_type() == torch::kFloat32 && at::hasMKLDNN() &&
                      at::globalContext().userEnabledMkldnn();
  if (!onednn) return torch::conv2d(x, w, bias, stride, padding, dilation, groups);
  return at::mkldnn_convolution(x, w, bias.defined() ? c10::optional<torch::Tensor>(bias) : c10::nullopt,
                                {padding, padding}, {stride, stride}, {dilation, dilation}, groups);
}

torch::Tensor BatchInvariantGroupNorm(const torch::Tensor& x, int64_t groups, const torch::Tensor& weight,
                                      const torch::Tensor& bias, double eps) {
  const auto f32 = [](const torch::Tensor& t) { return t.defined() ? t.to(torch::kFloat32) : t; };
  if (torch::GradMode::is_enabled() || !x.is_cpu()) {
    if (x.scalar_type() != torch::kBFloat16 || !x.is_cpu()) return torch::group_norm(x, groups, weight, bias, eps);
    return torch::group_norm(f32(x), groups, f32(weight), f32(bias), eps).to(torch::kBFloat16);  // see the header
  }
  const auto format = x.is_contiguous() ? torch::MemoryFormat::Contiguous : x.suggest_memory_format();
  torch::Tensor y = torch::group_norm(f32(x).contiguous(), groups, f32(weight), f32(bias), eps);
  return y.to(x.scalar_type()).contiguous(format);
}

}  // namespace tcm
