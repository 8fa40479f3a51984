#include "model/denoiser.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "model/derived_tensor.h"
#include "model/test_fixtures.h"

namespace tcm {
namespace {

using testing::kFixtureNames;
using testing::LoadFixtureIo;
using testing::LoadFixtureModel;

double RelativeError(const torch::Tensor& out, const torch::Tensor& ref) {
  return (out.to(torch::kFloat64) - ref.to(torch::kFloat64)).abs().max().item<double>() /
         ref.to(torch::kFloat64).abs().max().item<double>();
}

class FixtureTest : public ::testing::TestWithParam<const char*> {};

TEST_P(FixtureTest, ParameterNamesAreTheReferenceStateDictKeys) {
  ModelDirectory model = LoadFixtureModel(GetParam());
  auto denoiser = Denoiser::Create(model.config);
  ASSERT_TRUE(denoiser.ok()) << denoiser.status();
  TensorMap state = (*denoiser)->StateDict();
  ASSERT_EQ(state.size(), model.weights.size());
  for (const auto& [key, tensor] : model.weights) {
    ASSERT_TRUE(state.count(key)) << "no native parameter for " << key;
    EXPECT_EQ(state.at(key).sizes(), tensor.sizes()) << key;
  }
}

TEST_P(FixtureTest, DenoisedMatchesReference) {
  auto denoiser = BuildReplica(LoadFixtureModel(GetParam()));
  ASSERT_TRUE(denoiser.ok()) << denoiser.status();
  TensorMap io = LoadFixtureIo(GetParam());
  torch::InferenceMode inference;
  torch::Tensor labels = io.count("class_labels") ? io.at("class_labels") : torch::Tensor();
  torch::Tensor out = (*denoiser)->forward(io.at("x"), io.at("sigma"), labels);
  EXPECT_LT(RelativeError(out, io.at("denoised")), 1e-5);
}

TEST_P(FixtureTest, CachedInferencePathEqualsTrainingPath) {
  auto denoiser = BuildReplica(LoadFixtureModel(GetParam()));
  ASSERT_TRUE(denoiser.ok());
  TensorMap io = LoadFixtureIo(GetParam());
  torch::Tensor labels = io.count("class_labels") ? io.at("class_labels") : torch::Tensor();
  torch::Tensor with_grad = (*denoiser)->forward(io.at("x"), io.at("sigma"), labels).detach();  // no caches
  torch::InferenceMode inference;
  torch::Tensor cached = (*denoiser)->forward(io.at("x"), io.at("sigma"), labels);
  EXPECT_LT(RelativeError(cached, with_grad), 1e-5);  // same math, other summation orders
}

TEST_P(FixtureTest, RowsDoNotDependOnTheirBatch) {
  auto denoiser = BuildReplica(LoadFixtureModel(GetParam()));
  ASSERT_TRUE(denoiser.ok());
  TensorMap io = LoadFixtureIo(GetParam());
  torch::Tensor labels = io.count("class_labels") ? io.at("class_labels") : torch::Tensor();
  torch::InferenceMode inference;
  torch::Tensor batch = (*denoiser)->forward(io.at("x"), io.at("sigma"), labels);
  for (int64_t i = 0; i < batch.size(0); ++i) {
    torch::Tensor row = (*denoiser)->forward(io.at("x").narrow(0, i, 1), io.at("sigma").narrow(0, i, 1),
                                             labels.defined() ? labels.narrow(0, i, 1) : labels);
    EXPECT_LT(RelativeError(row[0], batch[i]), 1e-5) << "row " << i;
  }
}

// Every batch of two or more images gives each image the same bits, whatever
// the batch size and the image's row (a lone image may differ in the last
// bits: oneDNN picks another convolution kernel for a batch of one).
TEST_P(FixtureTest, RowsAreBitwiseIdenticalInBatchesOfTwoOrMore) {
  auto denoiser = BuildReplica(LoadFixtureModel(GetParam()));
  ASSERT_TRUE(denoiser.ok());
  TensorMap io = LoadFixtureIo(GetParam());
  torch::Tensor labels = io.count("class_labels") ? io.at("class_labels") : torch::Tensor();
  torch::InferenceMode inference;
  const torch::Tensor full = (*denoiser)->forward(io.at("x"), io.at("sigma"), labels);  // batch of 4
  const torch::Tensor order = torch::tensor({3, 1}, torch::kInt64);                     // batch of 2, rows moved
  const torch::Tensor pair =
      (*denoiser)->forward(io.at("x").index_select(0, order), io.at("sigma").index_select(0, order),
                           labels.defined() ? labels.index_select(0, order) : labels);
  EXPECT_TRUE(torch::equal(pair[0], full[3]));
  EXPECT_TRUE(torch::equal(pair[1], full[1]));
}

INSTANTIATE_TEST_SUITE_P(Reference, FixtureTest, ::testing::ValuesIn(kFixtureNames));

TEST(DenoiserTest, CacheRefreshesWhenAWeightChanges) {
  auto denoiser = BuildReplica(LoadFixtureModel("edm2_img64_tiny"));
  ASSERT_TRUE(denoiser.ok());
  TensorMap io = LoadFixtureIo("edm2_img64_tiny");
  auto run = [&] {
    torch::InferenceMode inference;
    return (*denoiser)->forward(io.at("x"), io.at("sigma"), io.at("class_labels"));
  };
  torch::Tensor before = run();
  {
    torch::NoGradGuard no_grad;
    (*denoiser)->StateDict().at("model.out_conv.weight").mul_(-1);
  }
  torch::Tensor after = run();
  // Grad mode on: computed from the current weights, bypassing every cache.
  torch::Tensor expected = (*denoiser)->forward(io.at("x"), io.at("sigma"), io.at("class_labels")).detach();
  EXPECT_GT((after - before).abs().max().item<double>(), 1e-3) << "stale cached weight";
  EXPECT_LT(RelativeError(after, expected), 1e-5);
}

TEST(DenoiserTest, LoadStateDictNamesMissingKey) {
  ModelDirectory model = LoadFixtureModel("ddpmpp_cond_tiny");
  model.weights.erase("model.map_label.weight");
  auto denoiser = Denoiser::Create(model.config);
  absl::Status status = (*denoiser)->LoadStateDict(model.weights, "w.safetensors");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("w.safetensors: missing weight 'model.map_label.weight' (expected shape [32, 10])"),
            absl::string_view::npos)
      << status;
}

TEST(DenoiserTest, LoadStateDictNamesUnexpectedKey) {
  ModelDirectory model = LoadFixtureModel("ddpmpp_cond_tiny");
  model.weights["model.extra.weight"] = torch::zeros({2});
  auto denoiser = Denoiser::Create(model.config);
  absl::Status status = (*denoiser)->LoadStateDict(model.weights, "w.safetensors");
  EXPECT_NE(status.message().find("unexpected weight 'model.extra.weight'"), absl::string_view::npos) << status;
}

TEST(DenoiserTest, LoadStateDictNamesShapeMismatchAndLeavesModelUnchanged) {
  ModelDirectory model = LoadFixtureModel("edm2_img64_tiny");
  auto denoiser = Denoiser::Create(model.config);
  torch::Tensor before = (*denoiser)->StateDict().at("model.out_gain").clone();
  model.weights["model.enc.64x64_conv.weight"] = torch::zeros({32, 3, 3, 3});
  absl::Status status = (*denoiser)->LoadStateDict(model.weights, "w.safetensors");
  EXPECT_NE(status.message().find("weight 'model.enc.64x64_conv.weight' has shape [32, 3, 3, 3] but the "
                                  "configuration needs [32, 4, 3, 3]"),
            absl::string_view::npos)
      << status;
  EXPECT_TRUE(torch::equal((*denoiser)->StateDict().at("model.out_gain"), before));
}

TEST(DenoiserTest, LoadStateDictRejectsIntegerWeights) {
  ModelDirectory model = LoadFixtureModel("edm2_img64_tiny");
  model.weights["model.out_gain"] = torch::zeros({}, torch::kInt64);
  auto denoiser = Denoiser::Create(model.config);
  absl::Status status = (*denoiser)->LoadStateDict(model.weights, "w.safetensors");
  EXPECT_NE(status.message().find("'model.out_gain' has dtype Long"), absl::string_view::npos) << status;
}

TEST(DenoiserTest, FlopsFollowTheArchitecture) {
  // The embedded Fashion-MNIST network: 0.84 GFLOP per image per forward pass.
  auto config = ParseModelConfigText(R"pb(
                                       architecture: "EDM2UNet"
                                       img_resolution: 32
                                       img_channels: 1
                                       num_classes: 10
                                       edm2 {
                                         model_channels: 32
                                         channel_mult: [ 1, 2, 2 ]
                                         num_blocks: 2
                                         attn_resolutions: [ 8 ]
                                       })pb",
                                     "config.pbtxt");
  ASSERT_TRUE(config.ok());
  auto denoiser = Denoiser::Create(*config);
  EXPECT_NEAR((*denoiser)->FlopsPerImage() / 1e9, 0.839, 0.001);
  // Doubling the channels quadruples the convolution work.
  config->mutable_edm2()->set_model_channels(64);
  auto wider = Denoiser::Create(*config);
  EXPECT_NEAR((*wider)->FlopsPerImage() / (*denoiser)->FlopsPerImage(), 4.0, 0.1);
}

}  // namespace
}  // namespace tcm
