// bf16 values as raw bits, and the float32 conversions the project's own
// loops use: widening is exact, narrowing rounds to nearest, ties to even.
#ifndef TCM_MODEL_BF16_BITS_H_
#define TCM_MODEL_BF16_BITS_H_

#include <cstdint>
#include <cstring>

namespace tcm {

// A bf16 value's bits: the upper half of the float32 with the same value.
using Bf16Bits = uint16_t;

inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float FloatFromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline float Widen(float v) { return v; }
inline float Widen(Bf16Bits v) { return FloatFromBits(static_cast<uint32_t>(v) << 16); }

// Stores f as the element type: float32 as is, bf16 rounded to the nearest,
// ties to even; a NaN stays a (quiet) NaN.
inline void Narrow(float f, float* out) { *out = f; }
inline void Narrow(float f, Bf16Bits* out) {
  const uint32_t u = FloatBits(f);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const bool nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  *out = static_cast<Bf16Bits>(nan ? ((u >> 16) | 0x40u) : rounded);
}

}  // namespace tcm

#endif  // TCM_MODEL_BF16_BITS_H_
