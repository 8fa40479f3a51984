// The loop behind RowWiseLinear (model/batch_invariant.h) in float32: each
// output is x's row times a weight column, summed in the order of the inputs,
// so a row's result never depends on the other rows or their number.
#ifndef TCM_MODEL_ROW_LINEAR_KERNEL_H_
#define TCM_MODEL_ROW_LINEAR_KERNEL_H_

#include <cstdint>

namespace tcm {

// y[r, o] = bias[o] + sum over i = 0, 1, ... of x[r, i] * wt[i, o], for rows
// rows of x [rows, in] (row-major), the transposed weight wt [in, out]
// (row-major) and y [rows, out]. `bias` may be null (then the sum starts at 0).
// The sum over i runs in that order for every output, vectorised across the
// outputs, so results are the same at any number of rows.
void LinearRows(const float* x, int64_t rows, int64_t in, const float* wt, int64_t out, const float* bias, float* y);

}  // namespace tcm

#endif  // TCM_MODEL_ROW_LINEAR_KERNEL_H_
