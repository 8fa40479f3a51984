#include "model/sampler.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "common/splitmix.h"

namespace tcm {

uint64_t ImageNoiseSeed(uint64_t seed, uint64_t index, NoiseStream stream) {
  return SplitMix64(SplitMix64(SplitMix64(seed) ^ index) ^ static_cast<uint64_t>(stream));
}

torch::Tensor ImageNoise(const v1::ModelConfig& config, uint64_t seed, uint64_t index, NoiseStream stream) {
  at::Generator gen = at::detail::createCPUGenerator(ImageNoiseSeed(seed, index, stream));
  const int64_t res = config.img_resolution();
  return torch::randn({int64_t(config.img_channels()), res, res}, gen, torch::kFloat32);
}

double StepSigma(const v1::ModelConfig& config, int step) { return step == 0 ? config.t_max() : config.mid_t(); }

bool StepsShareNetwork(const v1::ModelConfig& config) {
  if (!config.has_transition_t()) return true;
  return (config.t_max() >= config.transition_t()) == (config.mid_t() >= config.transition_t());
}

torch::Tensor FirstStepInput(const torch::Tensor& latent, double t_max) { return latent * t_max; }

torch::Tensor SecondStepInput(const torch::Tensor& first_step_output, const torch::Tensor& noise, double mid_t) {
  return first_step_output + noise * mid_t;
}

torch::Tensor StepInput(const v1::ModelConfig& config, uint64_t seed, uint64_t index, int step,
                        const torch::Tensor& previous) {
  if (step == 0) return FirstStepInput(ImageNoise(config, seed, index, NoiseStream::kLatent), config.t_max());
  return SecondStepInput(previous, ImageNoise(config, seed, index, NoiseStream::kSecondStep), config.mid_t());
}

torch::Tensor SampleImages(Denoiser& denoiser, const std::vector<ImageSpec>& images) {
  const auto& config = denoiser.config();
  const int64_t n = static_cast<int64_t>(images.size());
  std::vector<torch::Tensor> current(n);
  torch::Tensor labels;
  if (config.num_classes() > 0) {
    labels = torch::empty({n}, torch::kInt64);
    for (int64_t i = 0; i < n; ++i) labels[i] = images[i].class_label;
  }
  int max_steps = 0;
  for (const auto& img : images) max_steps = std::max(max_steps, img.steps);
  for (int step = 0; step < max_steps; ++step) {
    std::vector<int64_t> rows;
    std::vector<torch::Tensor> inputs;
    std::vector<float> sigmas;
    for (int64_t i = 0; i < n; ++i) {
      if (images[i].steps <= step) continue;
      rows.push_back(i);
      inputs.push_back(StepInput(config, images[i].seed, images[i].index, step, current[i]));
      sigmas.push_back(static_cast<float>(StepSigma(config, step)));
    }
    torch::Tensor row_index = torch::tensor(rows, torch::kInt64);
    torch::Tensor out = denoiser.forward(torch::stack(inputs), torch::tensor(sigmas),
                                         labels.defined() ? labels.index_select(0, row_index) : torch::Tensor());
    for (size_t r = 0; r < rows.size(); ++r) current[rows[r]] = out[r];
  }
  return torch::stack(current);
}

torch::Tensor ToPixels(const torch::Tensor& images) {
  return images.mul(127.5).add(127.5).round().clamp(0, 255).to(torch::kUInt8).permute({0, 2, 3, 1}).contiguous();
}

}  // namespace tcm
