// The loop behind ScaledCat (model/concat.h): two row sets joined row by row,
// each scaled on the way, in float32 arithmetic with one rounding.
#ifndef TCM_MODEL_CONCAT_KERNEL_H_
#define TCM_MODEL_CONCAT_KERNEL_H_

#include <cstdint>

#include "model/bf16_bits.h"

namespace tcm {

// For r < rows: out[r] = [a[r] * scale_a, b[r] * scale_b], where a's rows
// hold na values, b's nb and out's na + nb, all rows back to back. Each value
// is its input times the scale in float32, then stored as the element type
// (bf16 rounded to nearest, ties to even): a value's result depends on that
// value alone. A scale of exactly 1 copies the values' bits. `out` must not
// overlap `a` or `b`.
void ScaledConcatRows(const float* a, int64_t na, float scale_a, const float* b, int64_t nb, float scale_b,
                      int64_t rows, float* out);
void ScaledConcatRows(const Bf16Bits* a, int64_t na, float scale_a, const Bf16Bits* b, int64_t nb, float scale_b,
                      int64_t rows, Bf16Bits* out);

}  // namespace tcm

#endif  // TCM_MODEL_CONCAT_KERNEL_H_
