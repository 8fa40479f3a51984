#include "model/silu_kernel.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "model/cpu_clones.h"

namespace tcm {
namespace {

// Values per block: every value, the tail's included, is computed by the
// block loop below, so its result never depends on where it sits.
constexpr int64_t kBlock = 32;

// exp(x) for x <= 0: Cody-Waite reduction by ln 2 and Cephes' degree-6
// polynomial, scaled by 2^n in two halves so that results down to float32's
// smallest subnormals come out right (below -104, where exp rounds to zero,
// x is clamped). Plain float arithmetic, so it vectorises.
inline float ExpNonPositive(float x) {
  x = std::max(x, -104.0f);
  constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float shifted = x * 1.44269504088896341f + kRoundMagic;
  const float n = shifted - kRoundMagic;
  const int32_t exponent = static_cast<int32_t>(FloatBits(shifted) - FloatBits(kRoundMagic));  // in [-150, 0]
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * r * r + r + 1.0f;
  const int32_t half = exponent / 2;  // both halves stay normal powers of two
  const float scale_a = FloatFromBits(static_cast<uint32_t>(half + 127) << 23);
  const float scale_b = FloatFromBits(static_cast<uint32_t>(exponent - half + 127) << 23);
  return e * scale_a * scale_b;
}

// x * sigmoid(x) as x / (1 + e) for x >= 0 and x e / (1 + e) below, with
// e = exp(-|x|) <= 1: no overflow anywhere, full precision in both tails.
inline float Silu(float v) {
  const float e = ExpNonPositive(-std::fabs(v));
  return (v >= 0.0f ? v : v * e) / (1.0f + e);
}

// kBlock values: out[i] = silu(in[i] * scale(i)).
template <typename T, typename Scale>
inline __attribute__((always_inline)) void Block(const T* in, T* out, Scale scale) {
  float v[kBlock];
  for (int64_t i = 0; i < kBlock; ++i) v[i] = Silu(Widen(in[i]) * scale(i));
  for (int64_t i = 0; i < kBlock; ++i) Narrow(v[i], out + i);
}

template <typename T, typename Scale>
inline __attribute__((always_inline)) void Row(const T* in, T* out, int64_t n, Scale scale) {
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock) Block(in + i, out + i, [&](int64_t j) { return scale(i + j); });
  if (i == n) return;
  const int64_t rest = n - i;
  T tail_in[kBlock] = {}, tail_out[kBlock];
  float tail_scale[kBlock] = {};
  std::copy(in + i, in + n, tail_in);
  for (int64_t j = 0; j < rest; ++j) tail_scale[j] = scale(i + j);
  Block(tail_in, tail_out, [&](int64_t j) { return tail_scale[j]; });
  std::copy(tail_out, tail_out + rest, out + i);
}

TCM_CPU_CLONES void RowFloat(const float* in, float* out, int64_t n, float scale) {
  Row(in, out, n, [scale](int64_t) { return scale; });
}
TCM_CPU_CLONES void RowBf16(const Bf16Bits* in, Bf16Bits* out, int64_t n, float scale) {
  Row(in, out, n, [scale](int64_t) { return scale; });
}
TCM_CPU_CLONES void RowsBf16Scaled(const Bf16Bits* in, Bf16Bits* out, int64_t rows, int64_t n, const float* scales) {
  for (int64_t r = 0; r < rows; ++r) Row(in + r * n, out + r * n, n, [scales](int64_t i) { return scales[i]; });
}
TCM_CPU_CLONES void RowsFloatScaled(const float* in, float* out, int64_t rows, int64_t n, const float* scales) {
  for (int64_t r = 0; r < rows; ++r) Row(in + r * n, out + r * n, n, [scales](int64_t i) { return scales[i]; });
}

// silu of every bf16 value, indexed by its bits, computed once by the
// float32 loop above and rounded: looking a value up gives the bits that loop
// gives it, for a load instead of the polynomial and the division. (A scaled
// value's float32 product has no entry: it is computed.)
const Bf16Bits* Bf16SiluTable() {
  static const std::vector<Bf16Bits> table = [] {
    std::vector<Bf16Bits> all(1 << 16), result(1 << 16);
    for (uint32_t bits = 0; bits < all.size(); ++bits) all[bits] = static_cast<Bf16Bits>(bits);
    RowBf16(all.data(), result.data(), static_cast<int64_t>(all.size()), 1.0f);
    return result;
  }();
  return table.data();
}

// out[i] = silu(in[i]) from the table.
void LookUp(const Bf16Bits* in, Bf16Bits* out, int64_t n) {
  const Bf16Bits* table = Bf16SiluTable();
  for (int64_t i = 0; i < n; ++i) out[i] = table[in[i]];
}

}  // namespace

void SiluRow(const float* in, float* out, int64_t n, float scale) { RowFloat(in, out, n, scale); }
void SiluRow(const Bf16Bits* in, Bf16Bits* out, int64_t n, float scale) {
  if (scale == 1.0f) return LookUp(in, out, n);
  RowBf16(in, out, n, scale);
}
void SiluRowsScaled(const float* in, float* out, int64_t rows, int64_t n, const float* scales) {
  RowsFloatScaled(in, out, rows, n, scales);
}
void SiluRowsScaled(const Bf16Bits* in, Bf16Bits* out, int64_t rows, int64_t n, const float* scales) {
  RowsBf16Scaled(in, out, rows, n, scales);
}

}  // namespace tcm
