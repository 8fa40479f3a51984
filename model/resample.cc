#include "model/resample.h"

#include <torch/torch.h>

namespace tcm {

bool IsBoxFilter(const std::vector<float>& taps) { return taps.size() == 2 && taps[0] == taps[1]; }

torch::Tensor ResampleFilter2d(const std::vector<float>& taps) {
  torch::Tensor f = torch::tensor(taps, torch::kFloat32);
  return torch::outer(f, f).div(f.sum().square()).unsqueeze(0).unsqueeze(0);
}

torch::Tensor Resample(const torch::Tensor& x, const torch::Tensor& filter2d, bool is_box, ResampleMode mode) {
  if (mode == ResampleMode::kKeep) return x;
  if (is_box) {
    if (mode == ResampleMode::kDown) return torch::avg_pool2d(x, 2);
    return torch::upsample_nearest2d(x, {x.size(2) * 2, x.size(3) * 2});
  }
  const int64_t channels = x.size(1);
  const int64_t pad = (filter2d.size(-1) - 1) / 2;
  torch::Tensor f = filter2d.to(x.dtype());
  if (mode == ResampleMode::kDown)
    return torch::conv2d(x, f.tile({channels, 1, 1, 1}), {}, /*stride=*/2, /*padding=*/pad, /*dilation=*/1,
                         /*groups=*/channels);
  return torch::conv_transpose2d(x, f.mul(4).tile({channels, 1, 1, 1}), {}, /*stride=*/2, /*padding=*/pad,
                                 /*output_padding=*/0, /*groups=*/channels);
}

}  // namespace tcm
