#include "model/sampler.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "model/test_fixtures.h"

namespace tcm {
namespace {

TEST(SamplerTest, NoiseDependsOnSeedIndexAndStreamOnly) {
  v1::ModelConfig config = testing::LoadFixtureModel("ddpmpp_cond_tiny").config;
  torch::Tensor a = ImageNoise(config, 42, 3, NoiseStream::kLatent);
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{3, 32, 32}));
  EXPECT_TRUE(torch::equal(a, ImageNoise(config, 42, 3, NoiseStream::kLatent)));
  EXPECT_FALSE(torch::equal(a, ImageNoise(config, 42, 4, NoiseStream::kLatent)));
  EXPECT_FALSE(torch::equal(a, ImageNoise(config, 43, 3, NoiseStream::kLatent)));
  EXPECT_FALSE(torch::equal(a, ImageNoise(config, 42, 3, NoiseStream::kSecondStep)));
  EXPECT_NEAR(a.std().item<double>(), 1.0, 0.05);
  EXPECT_NE(ImageNoiseSeed(1, 0, NoiseStream::kLatent), ImageNoiseSeed(0, 1, NoiseStream::kLatent));
}

TEST(SamplerTest, StepInputsFollowTheSchedule) {
  v1::ModelConfig config = testing::LoadFixtureModel("ddpmpp_cond_tiny").config;
  EXPECT_DOUBLE_EQ(StepSigma(config, 0), 80.0);
  EXPECT_NEAR(StepSigma(config, 1), 0.821, 1e-6);
  torch::Tensor first = StepInput(config, 7, 0, 0, torch::Tensor());
  EXPECT_TRUE(torch::allclose(first, ImageNoise(config, 7, 0, NoiseStream::kLatent) * 80.0));
  torch::Tensor previous = torch::ones({3, 32, 32});
  torch::Tensor second = StepInput(config, 7, 0, 1, previous);
  EXPECT_TRUE(torch::allclose(second, previous + ImageNoise(config, 7, 0, NoiseStream::kSecondStep) * config.mid_t()));
}

TEST(SamplerTest, TwoStepSamplingMatchesReferenceGivenTheSameNoise) {
  auto denoiser = BuildReplica(testing::LoadFixtureModel("edm2_img64_tiny"));
  ASSERT_TRUE(denoiser.ok());
  TensorMap io = testing::LoadFixtureIo("edm2_img64_tiny");
  torch::InferenceMode inference;
  const int64_t n = io.at("latents").size(0);
  torch::Tensor labels = io.at("class_labels");
  torch::Tensor x1 =
      (*denoiser)->forward(FirstStepInput(io.at("latents").to(torch::kFloat32), 80.0), torch::full({n}, 80.0), labels);
  torch::Tensor x2 = (*denoiser)->forward(SecondStepInput(x1, io.at("step2_noise").to(torch::kFloat32), 0.821),
                                          torch::full({n}, 0.821), labels);
  const torch::Tensor ref = io.at("sample_2step").to(torch::kFloat32);
  EXPECT_LT((x2 - ref).abs().max().item<double>() / ref.abs().max().item<double>(), 1e-4);
}

TEST(SamplerTest, AnImageIsTheSameAloneOrInAMixedBatch) {
  auto denoiser = BuildReplica(testing::LoadFixtureModel("ddpmpp_cond_tiny"));
  ASSERT_TRUE(denoiser.ok());
  torch::InferenceMode inference;
  std::vector<ImageSpec> batch = {{5, 0, 3, 2}, {5, 1, 7, 1}, {9, 0, 1, 2}, {5, 2, 0, 1}};
  torch::Tensor together = SampleImages(**denoiser, batch);
  ASSERT_EQ(together.size(0), 4);
  for (size_t i = 0; i < batch.size(); ++i) {
    torch::Tensor alone = SampleImages(**denoiser, {batch[i]});
    EXPECT_LT((alone[0] - together[i]).abs().max().item<double>(), 1e-5) << "image " << i;
  }
  // Different seeds or indices give different images.
  EXPECT_GT((together[0] - together[2]).abs().max().item<double>(), 1e-2);
}

TEST(SamplerTest, ToPixelsMapsMinusOneToOneOntoBytes) {
  torch::Tensor images = torch::tensor({-1.5f, -1.0f, 0.0f, 0.999f, 1.0f, 2.0f}).reshape({1, 1, 2, 3});
  torch::Tensor pixels = ToPixels(images);
  EXPECT_EQ(pixels.sizes(), (std::vector<int64_t>{1, 2, 3, 1}));
  EXPECT_EQ(pixels.scalar_type(), torch::kUInt8);
  std::vector<int> values;
  for (int64_t i = 0; i < 6; ++i) values.push_back(pixels.flatten()[i].item<int>());
  EXPECT_EQ(values, (std::vector<int>{0, 0, 128, 255, 255, 255}));
}

}  // namespace
}  // namespace tcm
