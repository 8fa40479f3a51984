// SiLU, x * sigmoid(x), at the speed of the fastest LibTorch kernels.
#ifndef TCM_MODEL_SILU_H_
#define TCM_MODEL_SILU_H_

#include <torch/types.h>

namespace tcm {

// torch::silu, except for bf16 on the CPU with grad mode off (inference):
// LibTorch 1.13's bf16 CPU silu is not vectorised, and a sigmoid then a
// product is about twice as fast. The sigmoid is rounded to bf16 before the
// product, so a value may differ from torch::silu's by one bf16 rounding.
torch::Tensor Silu(const torch::Tensor& x);

// The same in place: x becomes silu(x); returns x.
torch::Tensor& Silu_(torch::Tensor& x);

}  // namespace tcm

#endif  // TCM_MODEL_SILU_H_
