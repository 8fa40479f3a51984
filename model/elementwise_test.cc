#include "model/elementwise.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "model/silu.h"

namespace tcm {
namespace {

constexpr double kEps = 1e-4;

// The pixel norm in float64: the value the kernels are held to.
torch::Tensor PixelNormReference(const torch::Tensor& x) {
  torch::Tensor d = x.to(torch::kFloat64);
  torch::Tensor norm = torch::linalg_vector_norm(d, 2, {1}, /*keepdim=*/true);
  return d / (norm / std::sqrt(static_cast<double>(x.size(1))) + kEps);
}

torch::Tensor ChannelsLast(torch::Tensor t) { return t.contiguous(torch::MemoryFormat::ChannelsLast); }

TEST(PixelNormTest, Float32ChannelsLastMatchesTheExactNormAndKeepsTheLayout) {
  torch::InferenceMode inference;
  torch::manual_seed(11);
  for (int64_t channels : {1, 5, 16, 32, 37}) {  // below, at and between the kernel's 16 lanes
    torch::Tensor x = ChannelsLast(torch::randn({3, channels, 5, 4}) * 3);
    torch::Tensor out = PixelNorm(x, kEps);
    EXPECT_TRUE(out.is_contiguous(torch::MemoryFormat::ChannelsLast)) << channels;
    EXPECT_TRUE(torch::allclose(out.to(torch::kFloat64), PixelNormReference(x), 2e-6, 1e-7)) << channels;
  }
}

TEST(PixelNormTest, Bf16IsTheFloat32QuotientRoundedOnce) {
  torch::InferenceMode inference;
  torch::manual_seed(12);
  torch::Tensor x = ChannelsLast(torch::randn({2, 48, 6, 6}).to(torch::kBFloat16));
  torch::Tensor out = PixelNorm(x, kEps);
  ASSERT_EQ(out.scalar_type(), torch::kBFloat16);
  // Within one bf16 step of the exact value (the rounding of a float32 quotient).
  torch::Tensor ref = PixelNormReference(x);
  torch::Tensor step = ref.abs().clamp_min(1e-30) * std::ldexp(1.0, -7);
  EXPECT_LE(((out.to(torch::kFloat64) - ref).abs() / step).max().item<double>(), 1.0);
}

TEST(PixelNormTest, APixelsResultDoesNotDependOnTheBatch) {
  torch::InferenceMode inference;
  torch::manual_seed(13);
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    torch::Tensor x = ChannelsLast(torch::randn({6, 40, 8, 8}).to(dtype));
    torch::Tensor batch = PixelNorm(x, kEps);
    for (int64_t i = 0; i < 6; ++i)
      EXPECT_TRUE(torch::equal(PixelNorm(ChannelsLast(x.narrow(0, i, 1)), kEps), batch.narrow(0, i, 1)))
          << "image " << i;
  }
}

TEST(PixelNormTest, TheFusedSiluIsTheSiluOfTheNormBitForBit) {
  torch::InferenceMode inference;
  torch::manual_seed(19);
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    for (auto layout : {torch::MemoryFormat::ChannelsLast, torch::MemoryFormat::Contiguous}) {  // kernel, fallback
      torch::Tensor x = (torch::randn({5, 37, 6, 7}) * 3).to(dtype).contiguous(layout);
      WithSilu both = PixelNormAndSilu(x, kEps);
      torch::Tensor norm = PixelNorm(x, kEps);
      EXPECT_TRUE(both.value.is_contiguous(layout));
      EXPECT_TRUE(both.silu.is_contiguous(layout));
      EXPECT_TRUE(torch::equal(both.value, norm));
      EXPECT_TRUE(torch::equal(both.silu, Silu(norm)));
      EXPECT_NE(both.value.data_ptr(), both.silu.data_ptr());
    }
  }
}

TEST(PixelNormTest, NchwAndTrainingTakeLibTorchsOperationsWithTheSameResult) {
  torch::manual_seed(14);
  torch::Tensor x = torch::randn({2, 8, 3, 3});
  {
    torch::InferenceMode inference;
    EXPECT_TRUE(torch::allclose(PixelNorm(x, kEps).to(torch::kFloat64), PixelNormReference(x), 2e-6, 1e-7));
  }
  torch::Tensor leaf = ChannelsLast(x.clone()).requires_grad_(true);
  torch::Tensor out = PixelNorm(leaf, kEps);
  ASSERT_TRUE(out.requires_grad());
  out.pow(2).sum().backward();
  EXPECT_TRUE(leaf.grad().defined());
}

TEST(PixelNormTest, GroupsOfInterleavedVectorsAreNormalisedEachOnTheirOwn) {
  torch::InferenceMode inference;
  torch::manual_seed(18);
  // 2 heads of 5 elements of 3 interleaved vectors (attention's q, k, v).
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    torch::Tensor x = (torch::randn({3, 30, 4, 5}) * 2).to(dtype);
    torch::Tensor v = x.to(torch::kFloat64).reshape({3, 2, 5, 3, 20});
    torch::Tensor ref = (v / (torch::linalg_vector_norm(v, 2, {2}, true) / std::sqrt(5.0) + kEps)).reshape(x.sizes());
    torch::Tensor kernel = PixelNorm(ChannelsLast(x), kEps, 2, 3);  // the own loop
    torch::Tensor fallback = PixelNorm(x, kEps, 2, 3);              // NCHW: LibTorch's operations
    // The own loop rounds once (half a bf16 step: at most 2^-8 of the
    // value); LibTorch's bf16
    // operations round the norm, its scale and the quotient each.
    const bool fp32 = dtype == torch::kFloat32;
    EXPECT_TRUE(kernel.is_contiguous(torch::MemoryFormat::ChannelsLast));
    EXPECT_TRUE(torch::allclose(kernel.to(torch::kFloat64), ref, fp32 ? 2e-6 : 4e-3, 1e-7));
    EXPECT_TRUE(torch::allclose(fallback.to(torch::kFloat64), ref, fp32 ? 2e-6 : 2e-2, 1e-7));
  }
  EXPECT_THROW(PixelNorm(torch::zeros({1, 10, 2, 2}), kEps, 3, 1), c10::Error);
}

// y + alpha * x clamped, in float64, then rounded to `dtype`.
torch::Tensor AddClampReference(const torch::Tensor& y, const torch::Tensor& x, double alpha, double clip,
                                torch::ScalarType dtype) {
  torch::Tensor sum = y.to(torch::kFloat64) + alpha * x.to(torch::kFloat64);
  if (clip > 0) sum = sum.clamp(-clip, clip);
  return sum.to(dtype);
}

TEST(AddScaledClampTest, SumsAndClipsInPlaceInEitherLayout) {
  torch::InferenceMode inference;
  torch::manual_seed(15);
  for (auto layout : {torch::MemoryFormat::Contiguous, torch::MemoryFormat::ChannelsLast}) {
    for (double clip : {0.0, 1.5}) {
      torch::Tensor y = (torch::randn({3, 7, 5, 5}) * 2).contiguous(layout);
      torch::Tensor x = (torch::randn({3, 7, 5, 5}) * 2).contiguous(layout);
      torch::Tensor expected = AddClampReference(y, x, 0.3, clip, torch::kFloat32);
      void* data = y.data_ptr();
      torch::Tensor& out = AddScaledClamp_(y, x, 0.3, clip);
      EXPECT_EQ(out.data_ptr(), data) << "in place";
      EXPECT_TRUE(y.is_contiguous(layout));
      // One float32 rounding of a product and a sum (or one fused step).
      EXPECT_TRUE(torch::allclose(y, expected, 0, 1e-6)) << "clip " << clip;
      if (clip > 0) EXPECT_LE(y.abs().max().item<float>(), clip);
    }
  }
}

TEST(AddScaledClampTest, Bf16RoundsTheFloat32SumOnce) {
  torch::InferenceMode inference;
  torch::manual_seed(16);
  torch::Tensor y = ChannelsLast(torch::randn({2, 16, 6, 6}).to(torch::kBFloat16));
  torch::Tensor x = ChannelsLast(torch::randn({2, 16, 6, 6}).to(torch::kBFloat16));
  torch::Tensor ref = y.to(torch::kFloat64) + 0.7 * x.to(torch::kFloat64);
  AddScaledClamp_(y, x, 0.7, 2.0);
  torch::Tensor exact = ref.clamp(-2.0, 2.0);
  torch::Tensor step = exact.abs().clamp_min(1e-30) * std::ldexp(1.0, -8);  // half a bf16 step
  EXPECT_LE(((y.to(torch::kFloat64) - exact).abs() / step).max().item<double>(), 1.0 + 1e-3);
  EXPECT_LE(y.abs().max().item<float>(), 2.0f);
}

TEST(AddScaledClampTest, MixedLayoutsAndTrainingTakeLibTorchsOperations) {
  torch::manual_seed(17);
  torch::Tensor x = ChannelsLast(torch::randn({2, 4, 3, 3}));
  torch::Tensor y = torch::randn({2, 4, 3, 3});
  torch::Tensor expected = AddClampReference(y, x, -0.5, 0.8, torch::kFloat32);
  {
    torch::InferenceMode inference;
    torch::Tensor z = y.clone();
    AddScaledClamp_(z, x, -0.5, 0.8);
    EXPECT_TRUE(torch::allclose(z, expected, 0, 1e-6));
  }
  torch::Tensor leaf = x.clone().requires_grad_(true);
  torch::Tensor z = y.clone();
  AddScaledClamp_(z, leaf, -0.5, 0.0);
  ASSERT_TRUE(z.requires_grad());
  z.sum().backward();
  EXPECT_TRUE(torch::allclose(leaf.grad(), torch::full_like(x, -0.5)));
}

}  // namespace
}  // namespace tcm
