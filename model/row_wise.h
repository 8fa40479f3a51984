// Batch-invariant building blocks shared by the networks.
#ifndef TCM_MODEL_ROW_WISE_H_
#define TCM_MODEL_ROW_WISE_H_

#include <torch/types.h>

namespace tcm {

// x @ w.t() (+ bias) for x [N, in], one matrix-vector product per row when
// grad mode is off and x is on the CPU. The BLAS picks its kernel by the
// number of rows, so a batched product changes a row's rounding with the batch
// size; per-row products keep every row bitwise independent of its batch. With
// grad mode on (training), or on a GPU (one kernel instead of N), it is the
// ordinary batched product.
torch::Tensor RowWiseLinear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias = {});

}  // namespace tcm

#endif  // TCM_MODEL_ROW_WISE_H_
