#include "model/resample.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/torch.h>

#include <cstring>

namespace tcm {
namespace {

// Output rows per parallel chunk: enough that a thread's start costs little.
constexpr int64_t kGrainRows = 8;

// Nearest-neighbour 2x upsampling of a channels-last tensor: each input
// pixel's channel vector copied into its four output pixels, a row of them
// at a time (LibTorch's upsample_nearest2d computes a source index per output
// value).
torch::Tensor UpsampleNearest2xChannelsLast(const torch::Tensor& x) {
  RECORD_FUNCTION("tcm::upsample_nearest_2x", std::vector<c10::IValue>{});  // named in tcm-model-bench --profile
  const int64_t n = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  torch::Tensor out =
      torch::empty({n, channels, 2 * height, 2 * width}, x.options().memory_format(torch::MemoryFormat::ChannelsLast));
  const int64_t pixel_bytes = channels * static_cast<int64_t>(x.element_size());
  const int64_t in_row_bytes = width * pixel_bytes, out_row_bytes = 2 * in_row_bytes;
  const char* src = static_cast<const char*>(x.data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  at::parallel_for(0, n * height, kGrainRows, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {  // input row -> output rows 2 * row and 2 * row + 1
      const char* in = src + row * in_row_bytes;
      char* even = dst + 2 * row * out_row_bytes;
      for (int64_t w = 0; w < width; ++w) {
        std::memcpy(even + 2 * w * pixel_bytes, in + w * pixel_bytes, pixel_bytes);
        std::memcpy(even + (2 * w + 1) * pixel_bytes, in + w * pixel_bytes, pixel_bytes);
      }
      std::memcpy(even + out_row_bytes, even, out_row_bytes);
    }
  });
  return out;
}

}  // namespace

bool IsBoxFilter(const std::vector<float>& taps) { return taps.size() == 2 && taps[0] == taps[1]; }

torch::Tensor ResampleFilter2d(const std::vector<float>& taps) {
  torch::Tensor f = torch::tensor(taps, torch::kFloat32);
  return torch::outer(f, f).div(f.sum().square()).unsqueeze(0).unsqueeze(0);
}

torch::Tensor Resample(const torch::Tensor& x, const torch::Tensor& filter2d, bool is_box, ResampleMode mode) {
  if (mode == ResampleMode::kKeep) return x;
  if (is_box) {
    if (mode == ResampleMode::kDown) return torch::avg_pool2d(x, 2);
    if (x.is_cpu() && !torch::GradMode::is_enabled() && x.dim() == 4 &&
        x.is_contiguous(torch::MemoryFormat::ChannelsLast))
      return UpsampleNearest2xChannelsLast(x);
    return torch::upsample_nearest2d(x, {x.size(2) * 2, x.size(3) * 2});
  }
  const int64_t channels = x.size(1);
  const int64_t pad = (filter2d.size(-1) - 1) / 2;
  torch::Tensor f = filter2d.to(x.dtype());
  if (mode == ResampleMode::kDown)
    return torch::conv2d(x, f.tile({channels, 1, 1, 1}), {}, /*stride=*/2, /*padding=*/pad, /*dilation=*/1,
                         /*groups=*/channels);
  // LibTorch 1.13's grouped transposed convolution in bf16 on the CPU gives a
  // wrong output size; reduced precisions upsample in float32 and round once.
  if ((x.scalar_type() == torch::kBFloat16 || x.scalar_type() == torch::kHalf) && x.is_cpu())
    return Resample(x.to(torch::kFloat32), filter2d, is_box, mode).to(x.scalar_type());
  return torch::conv_transpose2d(x, f.mul(4).tile({channels, 1, 1, 1}), {}, /*stride=*/2, /*padding=*/pad,
                                 /*output_padding=*/0, /*groups=*/channels);
}

}  // namespace tcm
