// The SiLU loops behind model/silu.h: x * sigmoid(x), optionally of x times a
// scale, on float32 or bf16 rows, through float32 arithmetic.
//
// float32: every value goes through the same instructions whatever the row's
// length or the value's place in it (a row's tail is run as a padded full
// block); results are within 4 float32 ulp of the exact value, and bf16 is
// that rounded to nearest (at a scale of 1 looked up in a table of every bf16
// value's result, computed once by the same loop). A value's result
// depends on the value and its scale alone: never on the batch size, the row
// or the thread split (model/silu_test.cc). The float32 loops are compiled for
// x86-64-v4 (AVX-512), x86-64-v3 (AVX2, FMA) and baseline x86-64, the best
// this CPU has chosen once at load: results are the same on one machine and
// may differ in the last float32 bit between CPU kinds.
#ifndef TCM_MODEL_SILU_KERNEL_H_
#define TCM_MODEL_SILU_KERNEL_H_

#include <cstdint>

#include "model/bf16_bits.h"

namespace tcm {

// out[i] = silu(in[i] * scale), i < n. `in` and `out` may be the same row.
void SiluRow(const float* in, float* out, int64_t n, float scale);
void SiluRow(const Bf16Bits* in, Bf16Bits* out, int64_t n, float scale);

// rows rows of n values each: out[r * n + i] = silu(in[r * n + i] * scales[i])
// (one scale per value of a row: channels-last pixels of one image, each row
// a pixel's channels). `in` and `out` may be the same rows.
void SiluRowsScaled(const float* in, float* out, int64_t rows, int64_t n, const float* scales);
void SiluRowsScaled(const Bf16Bits* in, Bf16Bits* out, int64_t rows, int64_t n, const float* scales);

}  // namespace tcm

#endif  // TCM_MODEL_SILU_KERNEL_H_
