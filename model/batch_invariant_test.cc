#include "model/batch_invariant.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <tuple>

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

}  // namespace
}  // namespace tcm
