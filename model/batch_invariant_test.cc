#include "model/batch_invariant.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <tuple>
#include <utility>

namespace tcm {
namespace {

double MaxRelativeError(const torch::Tensor& out, const torch::Tensor& ref) {
  torch::Tensor r = ref.to(torch::kFloat64);
  return ((out.to(torch::kFloat64) - r).abs().max() / r.abs().max()).item<double>();
}

TEST(RowWiseLinearTest, Float32MatchesLibTorchsLinear) {
  torch::InferenceMode inference;
  torch::manual_seed(11);
  for (auto [rows, in, out] : {std::tuple{16, 128, 64}, std::tuple{3, 13, 37}, std::tuple{1, 256, 512}}) {
    torch::Tensor x = torch::randn({rows, in}), w = torch::randn({out, in}), bias = torch::randn({out});
    torch::Tensor exact = torch::linear(x.to(torch::kFloat64), w.to(torch::kFloat64), bias.to(torch::kFloat64));
    EXPECT_LT(MaxRelativeError(RowWiseLinear(x, w, bias), exact), 1e-6) << rows << "x" << in << "->" << out;
    torch::Tensor no_bias = torch::linear(x.to(torch::kFloat64), w.to(torch::kFloat64));
    EXPECT_LT(MaxRelativeError(RowWiseLinear(x, w), no_bias), 1e-6);
    EXPECT_EQ(RowWiseLinear(x, w, bias).sizes(), (std::vector<int64_t>{rows, out}));
  }
}

TEST(RowWiseLinearTest, ARowsResultDoesNotDependOnTheOtherRows) {
  torch::InferenceMode inference;
  torch::manual_seed(12);
  torch::Tensor x = torch::randn({33, 96}), w = torch::randn({75, 96}), bias = torch::randn({75});
  torch::Tensor batch = RowWiseLinear(x, w, bias);
  for (int64_t r : {0, 1, 16, 32}) {
    EXPECT_TRUE(torch::equal(RowWiseLinear(x.slice(0, r, r + 1), w, bias), batch.slice(0, r, r + 1))) << "row " << r;
  }
  EXPECT_TRUE(torch::equal(RowWiseLinear(x.slice(0, 5, 12), w, bias), batch.slice(0, 5, 12)));
}

TEST(RowWiseLinearTest, NonContiguousInputsAndWeightsGiveTheSameValues) {
  torch::InferenceMode inference;
  torch::manual_seed(13);
  torch::Tensor x = torch::randn({40, 8}).t(), w = torch::randn({24, 40});  // x: [8, 40], strided
  EXPECT_TRUE(torch::equal(RowWiseLinear(x, w), RowWiseLinear(x.contiguous(), w)));
  EXPECT_TRUE(torch::equal(RowWiseLinear(x, w.t().contiguous().t()), RowWiseLinear(x, w)));
}

TEST(RowWiseLinearTest, WithGradientsItIsLibTorchsLinear) {
  torch::Tensor x = torch::randn({4, 6}), w = torch::randn({5, 6}).requires_grad_(true);
  torch::Tensor out = RowWiseLinear(x, w);
  EXPECT_TRUE(torch::equal(out, torch::linear(x, w)));
  out.sum().backward();
  EXPECT_TRUE(w.grad().defined());
}

torch::Tensor ChannelsLast(const torch::Tensor& t) { return t.contiguous(torch::MemoryFormat::ChannelsLast); }

// group_norm in float64: the value the own loops are held to.
torch::Tensor GroupNormReference(const torch::Tensor& x, int64_t groups, const torch::Tensor& w, const torch::Tensor& b,
                                 double eps) {
  return torch::group_norm(x.to(torch::kFloat64), groups, w.to(torch::kFloat64), b.to(torch::kFloat64), eps);
}

TEST(BatchInvariantGroupNormTest, ChannelsLastFloat32MatchesTheExactNormInItsLayout) {
  torch::InferenceMode inference;
  torch::manual_seed(21);
  // Channel counts below, at and above the 64-channel blocks; groups of 1 to 8 channels.
  for (auto [channels, groups] : {std::pair{8, 2}, std::pair{64, 32}, std::pair{96, 12}, std::pair{320, 32}}) {
    torch::Tensor x = ChannelsLast(torch::randn({3, channels, 7, 5}) * 2 + 0.5);
    torch::Tensor w = torch::randn({channels}), b = torch::randn({channels});
    torch::Tensor out = BatchInvariantGroupNorm(x, groups, w, b, 1e-6);
    EXPECT_TRUE(out.is_contiguous(torch::MemoryFormat::ChannelsLast)) << channels;
    EXPECT_EQ(out.scalar_type(), torch::kFloat32);
    EXPECT_LT(MaxRelativeError(out, GroupNormReference(x, groups, w, b, 1e-6)), 1e-6) << channels;
  }
}

TEST(BatchInvariantGroupNormTest, ChannelsLastBf16IsTheFloat32NormRoundedOnce) {
  torch::InferenceMode inference;
  torch::manual_seed(22);
  torch::Tensor x = ChannelsLast(torch::randn({2, 128, 8, 8}).to(torch::kBFloat16));
  torch::Tensor w = torch::randn({128}), b = torch::randn({128});
  torch::Tensor out = BatchInvariantGroupNorm(x, 32, w, b, 1e-6);
  ASSERT_EQ(out.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(out.is_contiguous(torch::MemoryFormat::ChannelsLast));
  // Half a bf16 step of the largest value, plus float32 error.
  EXPECT_LT(MaxRelativeError(out, GroupNormReference(x, 32, w, b, 1e-6)), std::ldexp(1.0, -8));
}

TEST(BatchInvariantGroupNormTest, AnImagesResultDoesNotDependOnTheBatch) {
  torch::InferenceMode inference;
  torch::manual_seed(23);
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    torch::Tensor x = ChannelsLast(torch::randn({5, 192, 6, 6}).to(dtype));
    torch::Tensor w = torch::randn({192}), b = torch::randn({192});
    torch::Tensor batch = BatchInvariantGroupNorm(x, 32, w, b, 1e-6);
    for (int64_t i = 0; i < 5; ++i) {
      torch::Tensor alone = BatchInvariantGroupNorm(ChannelsLast(x.narrow(0, i, 1)), 32, w, b, 1e-6);
      EXPECT_TRUE(torch::equal(alone, batch.narrow(0, i, 1))) << "image " << i;
    }
  }
}

TEST(BatchInvariantGroupNormTest, WithoutAffineParametersAndInNchwTheValuesAgree) {
  torch::InferenceMode inference;
  torch::manual_seed(24);
  torch::Tensor x = torch::randn({2, 16, 4, 4});
  torch::Tensor ref = torch::group_norm(x.to(torch::kFloat64), 4, {}, {}, 1e-5);
  EXPECT_LT(MaxRelativeError(BatchInvariantGroupNorm(ChannelsLast(x), 4, {}, {}, 1e-5), ref), 1e-6);
  torch::Tensor nchw = BatchInvariantGroupNorm(x, 4, {}, {}, 1e-5);  // LibTorch's kernel
  EXPECT_TRUE(nchw.is_contiguous());
  EXPECT_LT(MaxRelativeError(nchw, ref), 1e-6);
}

}  // namespace
}  // namespace tcm
