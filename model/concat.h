// Concatenation along channels, the UNets' skip connections.
#ifndef TCM_MODEL_CONCAT_H_
#define TCM_MODEL_CONCAT_H_

#include <torch/types.h>

#include "model/silu.h"

namespace tcm {

// torch::cat({a * scale_a, b * scale_b}, 1) for a [N, Ca, H, W] and
// b [N, Cb, H, W], in the inputs' layout. For float32 or bf16 on the CPU with
// grad mode off, both inputs in the same layout (contiguous or channels-last),
// one pass of the project's own loop (model/concat_kernel.h) writes the
// result, scaled on the way (LibTorch 1.13's cat of channels-last float32
// tensors takes a slow path, and the scales would be two more passes:
// docs/MODEL.md). Everything else goes through torch::cat and an in-place
// product per scale other than 1.
torch::Tensor ScaledCat(const torch::Tensor& a, double scale_a, const torch::Tensor& b, double scale_b);

// ScaledCat and its SiLU; on the kernel path in one pass, each chunk's SiLU
// taken while the chunk is in cache.
WithSilu ScaledCatAndSilu(const torch::Tensor& a, double scale_a, const torch::Tensor& b, double scale_b);

}  // namespace tcm

#endif  // TCM_MODEL_CONCAT_H_
