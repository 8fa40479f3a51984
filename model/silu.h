// SiLU, x * sigmoid(x), on the network's hot path.
#ifndef TCM_MODEL_SILU_H_
#define TCM_MODEL_SILU_H_

#include <torch/types.h>

namespace tcm {

// torch::silu, except for float32 and bf16 on the CPU with grad mode off
// (inference) in the contiguous or channels-last layout: there the
// project's own loops (model/silu_kernel.h) compute it in float32 and round
// once (bf16: from a table of every value's result), faster than LibTorch
// 1.13's kernels (docs/MODEL.md), and batch invariant (a value's result
// depends on that value alone). Values agree with torch::silu's within 2
// float32 ulp before rounding.
torch::Tensor Silu(const torch::Tensor& x);

// A tensor and its SiLU, made together by an operation that takes the SiLU
// of each chunk of its result while that chunk is in cache (PixelNormAndSilu,
// ScaledCatAndSilu): `silu` equals Silu(value) bit for bit.
struct WithSilu {
  torch::Tensor value;
  torch::Tensor silu;
};

// The same in place: x becomes silu(x); returns x.
torch::Tensor& Silu_(torch::Tensor& x);

// x [N, C, H, W] becomes silu(x * scale[:, :, None, None]) for a float32
// `scale` [N, C], in one pass through x (the product is not rounded to x's
// dtype first on the kernel path); returns x.
torch::Tensor& ScaledSilu_(torch::Tensor& x, const torch::Tensor& scale);

}  // namespace tcm

#endif  // TCM_MODEL_SILU_H_
