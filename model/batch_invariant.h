// Batch-invariant building blocks shared by the networks: with grad mode off
// (inference) on the CPU, each computes every image of a batch with the same
// arithmetic in the same order, so an image's bits do not depend on the batch
// size, on its row, or on what else is in the batch. With grad mode on
// (training), or on a GPU, they are the ordinary LibTorch operations.
#ifndef TCM_MODEL_BATCH_INVARIANT_H_
#define TCM_MODEL_BATCH_INVARIANT_H_

#include <torch/types.h>

namespace tcm {

// x @ w.t() (+ bias) for x [N, in], each row on its own on the CPU: the BLAS
// picks its kernel by the number of rows, so a batched product changes a
// row's rounding with the batch size. float32 runs the project's own loop
// (model/row_linear_kernel.h: one call for all rows, sums in input order);
// other dtypes one matrix-vector product per row. On a GPU it is the batched
// product (one kernel instead of N).
torch::Tensor RowWiseLinear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias = {});

// conv2d with square stride, padding and dilation. On the CPU in float32 it
// always runs oneDNN's convolution: LibTorch sends a lone image with a small
// input (under 20480 values) or a 1x1 kernel to im2col and BLAS instead, which
// rounds differently from the kernel used for two or more images. bf16 already
// runs oneDNN at every batch size.
torch::Tensor BatchInvariantConv2d(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias,
                                   int64_t stride, int64_t padding, int64_t dilation = 1, int64_t groups = 1);

// group_norm returning x's dtype and memory format. LibTorch 1.13's
// channels-last CPU kernel splits its sums by images and threads, and its bf16
// channels-last kernel is wrong (relative error ~0.2 on the reference
// fixtures). So in inference, channels-last float32 or bf16 input runs the
// project's own loops (model/group_norm_kernel.h): float32 arithmetic, each
// channel's sums over the pixels in order, one rounding of the result. Other
// input in inference is normalised by LibTorch in the contiguous layout, whose
// kernel reduces each (image, group) in one pass, bf16 in float32; with grad
// mode on, bf16 on the CPU is normalised in float32 in its own layout.
torch::Tensor BatchInvariantGroupNorm(const torch::Tensor& x, int64_t groups, const torch::Tensor& weight,
                                      const torch::Tensor& bias, double eps);

}  // namespace tcm

#endif  // TCM_MODEL_BATCH_INVARIANT_H_
