#include "model/concat_kernel.h"

#include <algorithm>

#include "model/cpu_clones.h"

namespace tcm {
namespace {

template <typename T>
inline __attribute__((always_inline)) void ScaleRow(const T* __restrict in, int64_t n, float scale, T* __restrict out) {
  if (scale == 1.0f) {  // a copy: the same bits as the product, a NaN's payload kept
    std::copy(in, in + n, out);
    return;
  }
  for (int64_t i = 0; i < n; ++i) Narrow(Widen(in[i]) * scale, out + i);
}

template <typename T>
inline __attribute__((always_inline)) void Rows(const T* a, int64_t na, float scale_a, const T* b, int64_t nb,
                                                float scale_b, int64_t rows, T* out) {
  for (int64_t r = 0; r < rows; ++r) {
    T* row = out + r * (na + nb);
    ScaleRow(a + r * na, na, scale_a, row);
    ScaleRow(b + r * nb, nb, scale_b, row + na);
  }
}

TCM_CPU_CLONES void RowsFloat(const float* a, int64_t na, float scale_a, const float* b, int64_t nb, float scale_b,
                              int64_t rows, float* out) {
  Rows(a, na, scale_a, b, nb, scale_b, rows, out);
}
TCM_CPU_CLONES void RowsBf16(const Bf16Bits* a, int64_t na, float scale_a, const Bf16Bits* b, int64_t nb, float scale_b,
                             int64_t rows, Bf16Bits* out) {
  Rows(a, na, scale_a, b, nb, scale_b, rows, out);
}

}  // namespace

void ScaledConcatRows(const float* a, int64_t na, float scale_a, const float* b, int64_t nb, float scale_b,
                      int64_t rows, float* out) {
  RowsFloat(a, na, scale_a, b, nb, scale_b, rows, out);
}
void ScaledConcatRows(const Bf16Bits* a, int64_t na, float scale_a, const Bf16Bits* b, int64_t nb, float scale_b,
                      int64_t rows, Bf16Bits* out) {
  RowsBf16(a, na, scale_a, b, nb, scale_b, rows, out);
}

}  // namespace tcm
