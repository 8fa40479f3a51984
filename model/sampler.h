// Consistency sampling in one or two steps (TCM / ECT `ct_eval.py`):
//   step 1: x1 = D(z * t_max, t_max)
//   step 2: x0 = D(x1 + mid_t * n, mid_t)
// Every image draws its noise (z, then n) from generators seeded from
// (request seed, image index) alone, so an image does not depend on what else
// shares its batch.
#ifndef TCM_MODEL_SAMPLER_H_
#define TCM_MODEL_SAMPLER_H_

#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "model/denoiser.h"

namespace tcm {

enum class NoiseStream : uint64_t { kLatent = 0, kSecondStep = 1 };

// Generator seed of one noise stream of image `index` of a request seeded `seed`.
uint64_t ImageNoiseSeed(uint64_t seed, uint64_t index, NoiseStream stream);

// Standard normal noise [C, H, W] (float32) of one stream of one image.
torch::Tensor ImageNoise(const v1::ModelConfig& config, uint64_t seed, uint64_t index, NoiseStream stream);

// Noise level of sampling step `step` (0 = first, at t_max; 1 = second, at mid_t).
double StepSigma(const v1::ModelConfig& config, int step);

// Whether both sampling steps run on the same network: false for a composed
// model (ModelConfig.transition_t) whose t_max and mid_t lie on different
// sides of t'. Only then can first and second steps share a forward pass
// without splitting it in two.
bool StepsShareNetwork(const v1::ModelConfig& config);

// Network inputs of the two steps, given their noise (any shape, same as x).
torch::Tensor FirstStepInput(const torch::Tensor& latent, double t_max);
torch::Tensor SecondStepInput(const torch::Tensor& first_step_output, const torch::Tensor& noise, double mid_t);

// The network input of `step` for image (seed, index): [C, H, W].
// `previous` is the image's output of the step before (unused at step 0).
torch::Tensor StepInput(const v1::ModelConfig& config, uint64_t seed, uint64_t index, int step,
                        const torch::Tensor& previous);

struct ImageSpec {
  uint64_t seed = 0;
  uint64_t index = 0;        // image index within its request
  int64_t class_label = -1;  // -1 = none (unconditional model)
  int steps = 1;             // 1 or 2
};

// Samples `images` in one batch per step (rows at different steps share a
// forward pass). Returns [N, C, H, W] float32 in about [-1, 1].
torch::Tensor SampleImages(Denoiser& denoiser, const std::vector<ImageSpec>& images);

// [N, C, H, W] in [-1, 1] to uint8 [N, H, W, C] (round(x * 127.5 + 127.5), clamped).
torch::Tensor ToPixels(const torch::Tensor& images);

}  // namespace tcm

#endif  // TCM_MODEL_SAMPLER_H_
