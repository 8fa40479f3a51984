// The loops behind BatchInvariantGroupNorm (model/batch_invariant.h) on
// channels-last data: one image's pixels as rows of `channels` values, a
// block of channels [c0, c0 + nc) at a time. Every per-channel sum runs over
// the pixels in order, so it never depends on the block split, the thread or
// the other images.
#ifndef TCM_MODEL_GROUP_NORM_KERNEL_H_
#define TCM_MODEL_GROUP_NORM_KERNEL_H_

#include <cstdint>

#include "model/bf16_bits.h"

namespace tcm {

// sum[c] = sum over pixels p of (x[p, c0 + c] - center[c]), c < nc; `center`
// may be null (zero). With `square`, the squared deviations are summed.
void ChannelSums(const float* x, int64_t pixels, int64_t channels, int64_t c0, int64_t nc, const float* center,
                 bool square, float* sum);
void ChannelSums(const Bf16Bits* x, int64_t pixels, int64_t channels, int64_t c0, int64_t nc, const float* center,
                 bool square, float* sum);

// y[p, c0 + c] = x[p, c0 + c] * scale[c] + shift[c] for every pixel, c < nc,
// in float32 and stored once (bf16 rounded to nearest, ties to even).
void ChannelAffine(const float* x, float* y, int64_t pixels, int64_t channels, int64_t c0, int64_t nc,
                   const float* scale, const float* shift);
void ChannelAffine(const Bf16Bits* x, Bf16Bits* y, int64_t pixels, int64_t channels, int64_t c0, int64_t nc,
                   const float* scale, const float* shift);

}  // namespace tcm

#endif  // TCM_MODEL_GROUP_NORM_KERNEL_H_
