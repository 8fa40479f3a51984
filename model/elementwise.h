// The element-wise steps between an EDM2 block's convolutions: pixel norm and
// the magnitude-preserving residual sum with its clip.
#ifndef TCM_MODEL_ELEMENTWISE_H_
#define TCM_MODEL_ELEMENTWISE_H_

#include <torch/types.h>

#include "model/silu.h"

namespace tcm {

// EDM2's pixel norm of x [N, C, H, W]: each pixel's channel vector divided by
// (its L2 norm / sqrt(its length) + eps). With `groups` > 1 or
// `interleave` > 1 a pixel's channels hold groups * interleave vectors, laid
// out (group, element, vector): channel (g * len + i) * interleave + j is
// element i of vector j of group g (attention's heads, each with its
// interleaved q, k and v). For float32 or bf16 channels-last x on the CPU
// with grad mode off, one pass of the project's own loop: sums of squares in
// float32 in a fixed order per vector (so a pixel's result never depends on
// the batch), the quotient rounded once. Otherwise LibTorch's operations, as
// model/edm2_unet.cc's `Normalize` computes it.
torch::Tensor PixelNorm(const torch::Tensor& x, double eps, int64_t groups = 1, int64_t interleave = 1);

// PixelNorm(x, eps) (one vector per pixel) and its SiLU; on the kernel path
// in one pass, each chunk's SiLU taken while the chunk is in cache.
WithSilu PixelNormAndSilu(const torch::Tensor& x, double eps);

// y = clamp(y + alpha * x, -clip, clip), in place; clip <= 0 leaves out the
// clamp. x and y have the same sizes. For float32 or bf16 on the CPU with
// grad mode off, both dense in the same layout, one pass in float32 with one
// rounding; otherwise add_ and clamp_. Returns y.
torch::Tensor& AddScaledClamp_(torch::Tensor& y, const torch::Tensor& x, double alpha, double clip);

}  // namespace tcm

#endif  // TCM_MODEL_ELEMENTWISE_H_
