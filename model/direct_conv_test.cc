#include "model/direct_conv.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <thread>
#include <vector>

namespace tcm {
namespace {

torch::Tensor ChannelsLast(torch::Tensor t) { return t.contiguous(torch::MemoryFormat::ChannelsLast); }

class DirectConv2dTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!DirectConv2d::Available()) GTEST_SKIP() << "this build has no direct convolutions";
  }
};

// conv(x, w) + scale * residual, clamped to [-clip, clip] (none for clip <= 0), in float64.
torch::Tensor Reference(const torch::Tensor& x, const torch::Tensor& w, const ConvEpilogue& e) {
  torch::Tensor y = torch::conv2d(x.to(torch::kFloat64), w.to(torch::kFloat64), {}, 1, w.size(-1) / 2);
  if (e.residual.defined()) y = y + e.residual.to(torch::kFloat64) * e.residual_scale;
  return e.clip > 0 ? y.clamp(-e.clip, e.clip) : y;
}

// The largest error in units of `relative` times (|reference| + floor).
double ScaledError(const torch::Tensor& out, const torch::Tensor& ref, double relative, double floor) {
  return ((out.to(torch::kFloat64) - ref).abs() / ((ref.abs() + floor) * relative)).max().item<double>();
}

TEST_F(DirectConv2dTest, Float32MatchesTheExactConvolutionAndKeepsChannelsLast) {
  torch::InferenceMode inference;
  torch::manual_seed(31);
  DirectConv2d conv;
  for (int64_t kernel : {1, 3}) {
    for (int64_t channels : {2, 16, 37}) {
      torch::Tensor x = ChannelsLast(torch::randn({3, channels, 7, 5}));
      torch::Tensor w = ChannelsLast(torch::randn({24, channels, kernel, kernel}));
      ASSERT_TRUE(DirectConv2d::Supports(x, w, {}));
      torch::Tensor y = conv.Run(x, w, {});
      EXPECT_EQ(y.sizes(), (std::vector<int64_t>{3, 24, 7, 5}));
      EXPECT_TRUE(y.is_contiguous(torch::MemoryFormat::ChannelsLast));
      EXPECT_TRUE(torch::allclose(y.to(torch::kFloat64), Reference(x, w, {}), 1e-5, 1e-4))
          << "kernel " << kernel << " channels " << channels;
    }
  }
}

TEST_F(DirectConv2dTest, TheResidualSumAndClipRunInsideTheConvolution) {
  torch::InferenceMode inference;
  torch::manual_seed(32);
  DirectConv2d conv;
  torch::Tensor x = ChannelsLast(torch::randn({2, 16, 6, 6}));
  torch::Tensor w = ChannelsLast(torch::randn({16, 16, 3, 3}) * 0.2);
  torch::Tensor r = ChannelsLast(torch::randn({2, 16, 6, 6}));
  for (const ConvEpilogue& e :
       {ConvEpilogue{r, 0.6, 0.0}, ConvEpilogue{r, 1.0, 0.0}, ConvEpilogue{r, 0.6, 1.5}, ConvEpilogue{{}, 1.0, 1.5}}) {
    torch::Tensor y = conv.Run(x, w, e);
    torch::Tensor ref = Reference(x, w, e);
    EXPECT_TRUE(torch::allclose(y.to(torch::kFloat64), ref, 1e-5, 1e-5))
        << "scale " << e.residual_scale << " clip " << e.clip << " max error "
        << (y.to(torch::kFloat64) - ref).abs().max().item<double>() << " y max " << y.abs().max().item<double>();
    if (e.clip > 0) {
      EXPECT_LE(y.abs().max().item<double>(), e.clip);
      ConvEpilogue unclipped = e;
      unclipped.clip = 0;
      EXPECT_GT((Reference(x, w, unclipped).abs() > e.clip).sum().item<int64_t>(), 0);  // the clip had work to do
    }
  }
}

TEST_F(DirectConv2dTest, AGivenUpResidualHoldsTheResult) {
  torch::InferenceMode inference;
  torch::manual_seed(37);
  DirectConv2d conv;
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    torch::Tensor x = ChannelsLast(torch::randn({3, 16, 5, 5}).to(dtype));
    torch::Tensor w = ChannelsLast((torch::randn({16, 16, 3, 3}) * 0.2).to(dtype));
    torch::Tensor r = ChannelsLast(torch::randn({3, 16, 5, 5}).to(dtype));
    const torch::Tensor r_before = r.clone();
    const torch::Tensor copied = conv.Run(x, w, {r, 0.6, 1.5});
    EXPECT_TRUE(torch::equal(r, r_before));  // not given up: left alone
    const torch::Tensor in_place = conv.Run(x, w, {r, 0.6, 1.5, /*overwrite_residual=*/true});
    EXPECT_EQ(in_place.data_ptr(), r.data_ptr());
    EXPECT_TRUE(torch::equal(in_place, copied)) << dtype;
    // A residual that is the input itself is never overwritten while it is read.
    const torch::Tensor x_before = x.clone();
    const torch::Tensor same = conv.Run(x, w, {x, 0.6, 1.5, /*overwrite_residual=*/true});
    EXPECT_TRUE(torch::equal(x, x_before));
    EXPECT_TRUE(torch::equal(same, conv.Run(x_before, w, {x_before, 0.6, 1.5})));
  }
}

TEST_F(DirectConv2dTest, Bf16IsTheFloat32ResultRoundedOnce) {
  torch::InferenceMode inference;
  torch::manual_seed(33);
  DirectConv2d conv;
  torch::Tensor x = ChannelsLast(torch::randn({2, 32, 8, 8}).to(torch::kBFloat16));
  torch::Tensor w = ChannelsLast((torch::randn({32, 32, 3, 3}) * 0.1).to(torch::kBFloat16));
  torch::Tensor r = ChannelsLast(torch::randn({2, 32, 8, 8}).to(torch::kBFloat16));
  const ConvEpilogue e{r, 0.7, 2.0};
  torch::Tensor y = conv.Run(x, w, e);
  ASSERT_EQ(y.scalar_type(), torch::kBFloat16);
  // Half a bf16 step (2^-8 relative) for the one rounding, the rest for
  // float32 sums: two roundings (conv to bf16, then the sum) would reach a
  // whole step.
  EXPECT_LE(ScaledError(y, Reference(x, w, e), std::ldexp(1.0, -8), 1e-3), 1.05);
}

TEST_F(DirectConv2dTest, AnImagesBitsDoNotDependOnTheBatch) {
  torch::InferenceMode inference;
  torch::manual_seed(34);
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    DirectConv2d conv;
    torch::Tensor x = ChannelsLast(torch::randn({5, 32, 8, 8}).to(dtype));
    torch::Tensor w = ChannelsLast((torch::randn({32, 32, 3, 3}) * 0.1).to(dtype));
    torch::Tensor r = ChannelsLast(torch::randn({5, 32, 8, 8}).to(dtype));
    torch::Tensor batch = conv.Run(x, w, {r, 0.5, 1.0});
    for (int64_t i = 0; i < 5; ++i) {
      torch::Tensor alone = conv.Run(ChannelsLast(x.narrow(0, i, 1)), w, {ChannelsLast(r.narrow(0, i, 1)), 0.5, 1.0});
      EXPECT_TRUE(torch::equal(alone, batch.narrow(0, i, 1))) << "image " << i << " " << dtype;
    }
  }
}

TEST_F(DirectConv2dTest, ANewWeightTensorReplacesTheReorderedWeights) {
  torch::InferenceMode inference;
  torch::manual_seed(35);
  DirectConv2d conv;
  torch::Tensor x = ChannelsLast(torch::randn({2, 8, 5, 5}));
  torch::Tensor w1 = ChannelsLast(torch::randn({8, 8, 3, 3}));
  torch::Tensor w2 = ChannelsLast(torch::randn({8, 8, 3, 3}));
  EXPECT_TRUE(torch::allclose(conv.Run(x, w1, {}).to(torch::kFloat64), Reference(x, w1, {}), 1e-5, 1e-4));
  EXPECT_TRUE(torch::allclose(conv.Run(x, w2, {}).to(torch::kFloat64), Reference(x, w2, {}), 1e-5, 1e-4));
  // An NCHW weight is read in its own layout.
  torch::Tensor w3 = torch::randn({8, 8, 3, 3});
  EXPECT_TRUE(torch::allclose(conv.Run(x, w3, {}).to(torch::kFloat64), Reference(x, w3, {}), 1e-5, 1e-4));
}

TEST_F(DirectConv2dTest, CallsFromSeveralThreadsAtOnceGiveTheSerialResults) {
  torch::InferenceMode inference;
  torch::manual_seed(36);
  DirectConv2d conv;
  torch::Tensor w = ChannelsLast(torch::randn({16, 16, 3, 3}) * 0.2);
  std::vector<torch::Tensor> inputs, expected;
  for (int64_t n = 1; n <= 4; ++n) {
    inputs.push_back(ChannelsLast(torch::randn({n, 16, 9, 9})));
    expected.push_back(conv.Run(inputs.back(), w, {inputs.back(), 0.5, 0.0}));
  }
  DirectConv2d fresh;  // primitives made while the other threads run
  std::vector<torch::Tensor> got(inputs.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < inputs.size(); ++i)
    threads.emplace_back([&, i] {
      torch::InferenceMode thread_inference;
      for (int repeat = 0; repeat < 20; ++repeat) got[i] = fresh.Run(inputs[i], w, {inputs[i], 0.5, 0.0});
    });
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < inputs.size(); ++i) EXPECT_TRUE(torch::equal(got[i], expected[i])) << "batch " << i + 1;
}

TEST_F(DirectConv2dTest, SupportsOnlyWhatRunComputes) {
  torch::Tensor x = ChannelsLast(torch::randn({2, 8, 5, 5}));
  torch::Tensor w = ChannelsLast(torch::randn({4, 8, 3, 3}));
  torch::Tensor r = ChannelsLast(torch::randn({2, 4, 5, 5}));
  {
    torch::InferenceMode inference;
    EXPECT_TRUE(DirectConv2d::Supports(x, w, {r, 0.5, 1.0}));
    EXPECT_FALSE(DirectConv2d::Supports(x.contiguous(), w, {}));                            // NCHW input
    EXPECT_FALSE(DirectConv2d::Supports(x, ChannelsLast(torch::randn({4, 8, 2, 2})), {}));  // even kernel
    EXPECT_FALSE(DirectConv2d::Supports(x, w.to(torch::kBFloat16), {}));                    // mixed dtypes
    EXPECT_FALSE(DirectConv2d::Supports(x.to(torch::kFloat64), w.to(torch::kFloat64), {}));
    EXPECT_FALSE(DirectConv2d::Supports(x, w, {r.contiguous(), 0.5, 1.0}));  // residual in another layout
    EXPECT_FALSE(DirectConv2d::Supports(x, w, {ChannelsLast(torch::randn({2, 4, 5, 4})), 0.5, 1.0}));
    DirectConv2d::SetEnabled(false);
    EXPECT_FALSE(DirectConv2d::Supports(x, w, {}));
    DirectConv2d::SetEnabled(true);
  }
  EXPECT_FALSE(DirectConv2d::Supports(x, w, {}));  // grad mode on: training takes LibTorch's convolution
}

}  // namespace
}  // namespace tcm
