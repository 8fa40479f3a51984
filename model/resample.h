// 2x up- and downsampling with a separable FIR filter, as the reference
// networks do it (depthwise [transposed] convolution with the outer product
// of the taps, normalised to unit DC gain).
#ifndef TCM_MODEL_RESAMPLE_H_
#define TCM_MODEL_RESAMPLE_H_

#include <torch/types.h>

#include <vector>

namespace tcm {

enum class ResampleMode { kKeep, kUp, kDown };

// The [1, 1, k, k] filter for `taps`: outer(taps, taps) / sum(taps)^2.
torch::Tensor ResampleFilter2d(const std::vector<float>& taps);

// Resamples x [N, C, H, W] with `filter2d` ([1, 1, k, k], k even). The box
// filter [1, 1] takes the equivalent average-pool / nearest-neighbour path
// (in CPU inference on channels-last x, upsampling copies each pixel's
// channels into its four output pixels: exactly LibTorch's values).
torch::Tensor Resample(const torch::Tensor& x, const torch::Tensor& filter2d, bool is_box, ResampleMode mode);

// True when `taps` are two equal values (the [1, 1] box filter).
bool IsBoxFilter(const std::vector<float>& taps);

}  // namespace tcm

#endif  // TCM_MODEL_RESAMPLE_H_
