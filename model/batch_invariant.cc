#include "model/batch_invariant.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "model/group_norm_kernel.h"
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

namespace {

// Channels per parallel task of the channels-last group norm.
constexpr int64_t kGroupNormBlock = 64;

// The group norm of channels-last float32 or bf16 x by the project's own
// loops: per image, each channel's sum and then its squared deviations from
// its group's mean, summed over the pixels in order; then one pass of
// x * scale + shift per channel.
template <typename T>
torch::Tensor ChannelsLastGroupNorm(const torch::Tensor& x, int64_t groups, const torch::Tensor& weight,
                                    const torch::Tensor& bias, double eps) {
  RECORD_FUNCTION("tcm::group_norm", std::vector<c10::IValue>{});  // named in tcm-model-bench --profile
  const int64_t n = x.size(0), channels = x.size(1), pixels = x.size(2) * x.size(3);
  const int64_t per_group = channels / groups, blocks = (channels + kGroupNormBlock - 1) / kGroupNormBlock;
  const T* in = static_cast<const T*>(x.data_ptr());
  torch::Tensor y = torch::empty_like(x);
  T* out = static_cast<T*>(y.data_ptr());
  std::vector<float> sums(n * channels), center(n * channels), scale(n * channels), shift(n * channels);
  // Runs f(image, first channel, channels) over every (image, block), split over the threads.
  const auto each_block = [&](const auto& f) {
    at::parallel_for(0, n * blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t image = t / blocks, c0 = (t % blocks) * kGroupNormBlock;
        f(image, c0, std::min(kGroupNormBlock, channels - c0));
      }
    });
  };
  // The average over a group of what `sums` holds, added in channel order.
  const auto group_average = [&](int64_t image, int64_t group) {
    double total = 0;
    for (int64_t c = group * per_group; c < (group + 1) * per_group; ++c) total += sums[image * channels + c];
    return total / static_cast<double>(per_group * pixels);
  };
  each_block([&](int64_t image, int64_t c0, int64_t nc) {
    ChannelSums(in + image * pixels * channels, pixels, channels, c0, nc, nullptr, false,
                sums.data() + image * channels + c0);
  });
  for (int64_t image = 0; image < n; ++image)
    for (int64_t g = 0; g < groups; ++g)
      std::fill_n(center.begin() + image * channels + g * per_group, per_group,
                  static_cast<float>(group_average(image, g)));
  each_block([&](int64_t image, int64_t c0, int64_t nc) {
    ChannelSums(in + image * pixels * channels, pixels, channels, c0, nc, center.data() + image * channels + c0, true,
                sums.data() + image * channels + c0);
  });
  const torch::Tensor w = weight.defined() ? weight.to(torch::kFloat32).contiguous() : weight;
  const torch::Tensor b = bias.defined() ? bias.to(torch::kFloat32).contiguous() : bias;
  for (int64_t image = 0; image < n; ++image) {
    for (int64_t g = 0; g < groups; ++g) {
      const double rstd = 1.0 / std::sqrt(group_average(image, g) + eps);  // sums now hold squared deviations
      for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c) {
        const int64_t i = image * channels + c;
        const double gain = rstd * (w.defined() ? w.data_ptr<float>()[c] : 1.0);
        scale[i] = static_cast<float>(gain);
        shift[i] = static_cast<float>((b.defined() ? b.data_ptr<float>()[c] : 0.0) - center[i] * gain);
      }
    }
  }
  each_block([&](int64_t image, int64_t c0, int64_t nc) {
    const int64_t offset = image * pixels * channels;
    ChannelAffine(in + offset, out + offset, pixels, channels, c0, nc, scale.data() + image * channels + c0,
                  shift.data() + image * channels + c0);
  });
  return y;
}

}  // namespace

torch::Tensor BatchInvariantGroupNorm(const torch::Tensor& x, int64_t groups, const torch::Tensor& weight,
                                      const torch::Tensor& bias, double eps) {
  const bool own_loops = !torch::GradMode::is_enabled() && x.is_cpu() && x.dim() == 4 && groups > 0 &&
                         x.size(1) % groups == 0 && x.is_contiguous(torch::MemoryFormat::ChannelsLast) &&
                         (x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kBFloat16);
  if (own_loops)
    return x.scalar_type() == torch::kBFloat16 ? ChannelsLastGroupNorm<Bf16Bits>(x, groups, weight, bias, eps)
                                               : ChannelsLastGroupNorm<float>(x, groups, weight, bias, eps);
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
