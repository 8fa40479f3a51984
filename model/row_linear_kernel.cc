#include "model/row_linear_kernel.h"

#include "model/cpu_clones.h"

namespace tcm {

TCM_CPU_CLONES void LinearRows(const float* __restrict x, int64_t rows, int64_t in, const float* __restrict wt,
                               int64_t out, const float* __restrict bias, float* __restrict y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * in;
    float* yr = y + r * out;
    for (int64_t o = 0; o < out; ++o) yr[o] = bias != nullptr ? bias[o] : 0.0f;
    // Each y[r, o] accumulates x[r, i] * wt[i, o] for i = 0, 1, ... in turn:
    // the loop over o is an independent multiply-add per output.
    for (int64_t i = 0; i < in; ++i) {
      const float xi = xr[i];
      const float* wi = wt + i * out;
      for (int64_t o = 0; o < out; ++o) yr[o] += xi * wi[o];
    }
  }
}

}  // namespace tcm
