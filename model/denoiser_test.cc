#include "model/denoiser.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/cpu_features.h"
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

// The served paths (channels-last, float32 or bf16, row shards on): the
// reference's values within the precision's tolerance (tcm-parity's).
TEST_P(FixtureTest, ServedComputePathsMatchReference) {
  auto denoiser = BuildReplica(LoadFixtureModel(GetParam()));
  ASSERT_TRUE(denoiser.ok());
  TensorMap io = LoadFixtureIo(GetParam());
  const torch::Tensor labels = io.count("class_labels") ? io.at("class_labels") : torch::Tensor();
  (*denoiser)->SetRowShards(true);
  for (const auto& [dtype, tolerance] : {std::pair{torch::kFloat32, 1e-5}, std::pair{torch::kBFloat16, 2e-2}}) {
    if (dtype == torch::kBFloat16 && !CpuHasNativeBf16()) continue;
    (*denoiser)->SetCompute(dtype, /*channels_last=*/true);
    (*denoiser)->PrepareForInference();
    torch::InferenceMode inference;
    const torch::Tensor out = (*denoiser)->forward(io.at("x"), io.at("sigma"), labels);
    EXPECT_LT(RelativeError(out, io.at("denoised")), tolerance) << (dtype == torch::kBFloat16 ? "bf16" : "fp32");
  }
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

INSTANTIATE_TEST_SUITE_P(Reference, FixtureTest, ::testing::ValuesIn(kFixtureNames));

// An image's bits depend on its inputs alone: not on the batch size, its row,
// the other images, or the number of threads. Checked in every way a replica
// computes (the served one: channels-last, float32 or, where the CPU has it
// natively, bf16; and the plain float32 layout of the tools).
struct ComputePath {
  torch::ScalarType dtype;
  bool channels_last;
};

class BatchInvarianceTest : public ::testing::TestWithParam<std::tuple<const char*, ComputePath>> {};

TEST_P(BatchInvarianceTest, EveryImageIsBitIdenticalAloneAtAnyRowInAnyBatchOnAnyThreadCountInShardsOrNot) {
  const auto& [name, path] = GetParam();
  if (path.dtype == torch::kBFloat16 && !CpuHasNativeBf16()) GTEST_SKIP() << "this CPU has no native bf16";
  auto denoiser = BuildReplica(LoadFixtureModel(name));
  ASSERT_TRUE(denoiser.ok());
  (*denoiser)->SetCompute(path.dtype, path.channels_last);
  (*denoiser)->PrepareForInference();
  TensorMap io = LoadFixtureIo(name);
  const torch::Tensor labels = io.count("class_labels") ? io.at("class_labels") : torch::Tensor();
  const int threads_before = torch::get_num_threads();
  torch::InferenceMode inference;
  auto run = [&](const std::vector<int64_t>& rows, int threads) {
    torch::set_num_threads(threads);
    const torch::Tensor index = torch::tensor(rows, torch::kInt64);
    return (*denoiser)->forward(io.at("x").index_select(0, index), io.at("sigma").index_select(0, index),
                                labels.defined() ? labels.index_select(0, index) : labels);
  };
  const int64_t n = io.at("x").size(0);
  std::vector<torch::Tensor> alone;
  for (int64_t i = 0; i < n; ++i) alone.push_back(run({i}, 1)[0]);
  // With two threads and row shards on, the batches of four rows or more run as two shards.
  const std::vector<std::vector<int64_t>> batches = {
      {3, 1}, {0, 1, 2, 3}, {2, 0, 3}, {1, 3, 0, 2, 2}, {3, 1, 0, 2, 1, 3, 0}};
  for (bool shards : {false, true}) {
    (*denoiser)->SetRowShards(shards);
    const int64_t sharded_before = (*denoiser)->sharded_passes();
    for (int threads : {1, 2}) {
      const std::string where = absl::StrCat(threads, " threads, row shards ", shards ? "on" : "off");
      EXPECT_TRUE(torch::equal(run({2}, threads)[0], alone[2])) << where;
      for (const auto& rows : batches) {
        const torch::Tensor out = run(rows, threads);
        for (size_t r = 0; r < rows.size(); ++r)
          EXPECT_TRUE(torch::equal(out[r], alone[rows[r]]))
              << "image " << rows[r] << " at row " << r << " of " << rows.size() << ", " << where;
      }
    }
    // At two threads the batches of four and more rows (three of the five) ran in shards.
    EXPECT_EQ((*denoiser)->sharded_passes() - sharded_before, shards ? 3 : 0);
  }
  (*denoiser)->SetRowShards(false);
  torch::set_num_threads(threads_before);
}

INSTANTIATE_TEST_SUITE_P(Reference, BatchInvarianceTest,
                         ::testing::Combine(::testing::ValuesIn(kFixtureNames),
                                            ::testing::Values(ComputePath{torch::kFloat32, true},
                                                              ComputePath{torch::kBFloat16, true},
                                                              ComputePath{torch::kFloat32, false})),
                         [](const auto& info) {
                           const ComputePath& path = std::get<1>(info.param);
                           return std::string(std::get<0>(info.param)) +
                                  (path.dtype == torch::kBFloat16 ? "_bf16" : "_fp32") +
                                  (path.channels_last ? "_channels_last" : "_nchw");
                         });

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
