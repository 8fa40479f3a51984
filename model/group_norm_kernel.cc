#include "model/group_norm_kernel.h"

#include "model/cpu_clones.h"

namespace tcm {
namespace {

// The most channels one call takes: the block's sums stay in registers or L1.
constexpr int64_t kMaxBlock = 256;

template <typename T>
inline __attribute__((always_inline)) void Sums(const T* __restrict x, int64_t pixels, int64_t channels, int64_t c0,
                                                int64_t nc, const float* __restrict center, bool square,
                                                float* __restrict sum) {
  float acc[kMaxBlock] = {}, mid[kMaxBlock] = {};
  if (center != nullptr)
    for (int64_t c = 0; c < nc; ++c) mid[c] = center[c];
  for (int64_t p = 0; p < pixels; ++p) {
    const T* row = x + p * channels + c0;
    if (square) {
      for (int64_t c = 0; c < nc; ++c) {
        const float d = Widen(row[c]) - mid[c];
        acc[c] += d * d;
      }
    } else {
      for (int64_t c = 0; c < nc; ++c) acc[c] += Widen(row[c]) - mid[c];
    }
  }
  for (int64_t c = 0; c < nc; ++c) sum[c] = acc[c];
}

template <typename T>
inline __attribute__((always_inline)) void Affine(const T* __restrict x, T* __restrict y, int64_t pixels,
                                                  int64_t channels, int64_t c0, int64_t nc,
                                                  const float* __restrict scale, const float* __restrict shift) {
  for (int64_t p = 0; p < pixels; ++p) {
    const T* in = x + p * channels + c0;
    T* out = y + p * channels + c0;
    for (int64_t c = 0; c < nc; ++c) Narrow(Widen(in[c]) * scale[c] + shift[c], out + c);
  }
}

TCM_CPU_CLONES void SumsFloat(const float* x, int64_t pixels, int64_t channels, int64_t c0, int64_t nc,
                              const float* center, bool square, float* sum) {
  Sums(x, pixels, channels, c0, nc, center, square, sum);
}
TCM_CPU_CLONES void SumsBf16(const Bf16Bits* x, int64_t pixels, int64_t channels, int64_t c0, int64_t nc,
                             const float* center, bool square, float* sum) {
  Sums(x, pixels, channels, c0, nc, center, square, sum);
}
TCM_CPU_CLONES void AffineFloat(const float* x, float* y, int64_t pixels, int64_t channels, int64_t c0, int64_t nc,
                                const float* scale, const float* shift) {
  Affine(x, y, pixels, channels, c0, nc, scale, shift);
}
TCM_CPU_CLONES void AffineBf16(const Bf16Bits* x, Bf16Bits* y, int64_t pixels, int64_t channels, int64_t c0, int64_t nc,
                               const float* scale, const float* shift) {
  Affine(x, y, pixels, channels, c0, nc, scale, shift);
}

// Splits [c0, c0 + nc) into calls of at most kMaxBlock channels.
template <typename F>
void InBlocks(int64_t c0, int64_t nc, const F& f) {
  for (int64_t c = 0; c < nc; c += kMaxBlock) f(c0 + c, c + kMaxBlock <= nc ? kMaxBlock : nc - c, c);
}

}  // namespace

void ChannelSums(const float* x, int64_t pixels, int64_t channels, int64_t c0, int64_t nc, const float* center,
                 bool square, float* sum) {
  InBlocks(c0, nc, [&](int64_t b0, int64_t bn, int64_t off) {
    SumsFloat(x, pixels, channels, b0, bn, center != nullptr ? center + off : nullptr, square, sum + off);
  });
}
void ChannelSums(const Bf16Bits* x, int64_t pixels, int64_t channels, int64_t c0, int64_t nc, const float* center,
                 bool square, float* sum) {
  InBlocks(c0, nc, [&](int64_t b0, int64_t bn, int64_t off) {
    SumsBf16(x, pixels, channels, b0, bn, center != nullptr ? center + off : nullptr, square, sum + off);
  });
}
void ChannelAffine(const float* x, float* y, int64_t pixels, int64_t channels, int64_t c0, int64_t nc,
                   const float* scale, const float* shift) {
  InBlocks(c0, nc, [&](int64_t b0, int64_t bn, int64_t off) {
    AffineFloat(x, y, pixels, channels, b0, bn, scale + off, shift + off);
  });
}
void ChannelAffine(const Bf16Bits* x, Bf16Bits* y, int64_t pixels, int64_t channels, int64_t c0, int64_t nc,
                   const float* scale, const float* shift) {
  InBlocks(c0, nc, [&](int64_t b0, int64_t bn, int64_t off) {
    AffineBf16(x, y, pixels, channels, b0, bn, scale + off, shift + off);
  });
}

}  // namespace tcm
