#include "model/silu.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

namespace tcm {
namespace {

// Inputs across SiLU's range: both tails, zero, tiny values, and the region
// where sigmoid bends.
torch::Tensor Inputs(torch::IntArrayRef shape) {
  torch::manual_seed(7);
  torch::Tensor x = torch::randn(shape) * 6;
  torch::Tensor flat = x.view(-1);
  const float specials[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 40.0f, -40.0f, 90.0f, -90.0f, 0.5f, -0.5f};
  for (int64_t i = 0; i < 10 && i < flat.numel(); ++i) flat[i] = specials[i];
  return x;
}

// float64 x * sigmoid(x), the reference the kernels are held to.
torch::Tensor Reference(const torch::Tensor& x) {
  torch::Tensor d = x.to(torch::kFloat64);
  return d * torch::sigmoid(d);
}

// Largest |out - ref| in units of ref's float32 spacing (ulp) at that value;
// below 1e-30 in magnitude an absolute error of 1e-37 counts as one ulp.
double MaxUlps(const torch::Tensor& out, const torch::Tensor& ref) {
  torch::Tensor r = ref.to(torch::kFloat64);
  torch::Tensor spacing = r.abs().clamp_min(1e-30) * std::ldexp(1.0, -23);
  return ((out.to(torch::kFloat64) - r).abs() / spacing).max().item<double>();
}

// bf16 results equal the float64 reference rounded to bf16, or its neighbour
// where the reference sits within float32 error of a rounding boundary.
void ExpectBf16Rounded(const torch::Tensor& out, const torch::Tensor& ref) {
  ASSERT_EQ(out.scalar_type(), torch::kBFloat16);
  torch::Tensor exact = ref.to(torch::kBFloat16).to(torch::kFloat64);
  torch::Tensor bf16_spacing = exact.abs().clamp_min(1e-30) * std::ldexp(1.0, -7);
  torch::Tensor off = (out.to(torch::kFloat64) - exact).abs() / bf16_spacing;
  EXPECT_LE(off.max().item<double>(), 1.0);
  const double exact_share = out.to(torch::kFloat64).eq(exact).to(torch::kFloat64).mean().item<double>();
  EXPECT_GT(exact_share, 0.999) << "most values round exactly as the reference does";
}

TEST(SiluTest, Float32IsWithinFourUlpsOfTheExactValue) {
  torch::InferenceMode inference;
  torch::Tensor x = Inputs({3, 5, 7, 11});
  EXPECT_LE(MaxUlps(Silu(x), Reference(x)), 4.0);
  torch::Tensor y = x.clone();
  Silu_(y);
  EXPECT_TRUE(torch::equal(y, Silu(x)));
}

TEST(SiluTest, Bf16IsTheFloat32ResultRoundedOnce) {
  torch::InferenceMode inference;
  torch::Tensor x = Inputs({4, 8, 9, 9}).to(torch::kBFloat16);
  ExpectBf16Rounded(Silu(x), Reference(x));
}

TEST(SiluTest, EveryBf16ValueGetsTheFloat32ResultRounded) {
  torch::InferenceMode inference;
  torch::Tensor bits = torch::arange(-32768, 32768, torch::kInt32).to(torch::kInt16);
  torch::Tensor all = bits.view(torch::kBFloat16);  // every bf16 bit pattern once
  torch::Tensor out = Silu(all);
  torch::Tensor expected = Silu(all.to(torch::kFloat32)).to(torch::kBFloat16);
  torch::Tensor nan = expected.isnan();
  EXPECT_TRUE(out.isnan().equal(nan));
  EXPECT_EQ(nan.sum().item<int64_t>(), all.isnan().sum().item<int64_t>() + 1) << "every NaN, and silu(-inf)";
  EXPECT_TRUE(out.masked_fill(nan, 0).equal(expected.masked_fill(nan, 0)));
}

TEST(SiluTest, ChannelsLastKeepsItsLayoutAndValues) {
  torch::InferenceMode inference;
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    torch::Tensor x = Inputs({2, 16, 5, 5}).to(dtype);
    torch::Tensor cl = x.contiguous(torch::MemoryFormat::ChannelsLast);
    torch::Tensor out = Silu(cl);
    EXPECT_TRUE(out.is_contiguous(torch::MemoryFormat::ChannelsLast));
    EXPECT_TRUE(torch::equal(out.contiguous(), Silu(x)));
  }
}

TEST(SiluTest, AValueDoesNotDependOnItsPlaceOrTheTensorsLength) {
  torch::InferenceMode inference;
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    torch::Tensor x = Inputs({1000}).to(dtype);
    torch::Tensor whole = Silu(x);
    for (int64_t start : {0, 1, 31, 33, 500}) {
      for (int64_t length : {1, 7, 32, 45, 100}) {
        torch::Tensor part = Silu(x.slice(0, start, start + length).clone());
        EXPECT_TRUE(torch::equal(part, whole.slice(0, start, start + length))) << start << "+" << length;
      }
    }
  }
}

TEST(SiluTest, NanStaysNan) {
  torch::InferenceMode inference;
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    torch::Tensor x = torch::full({40}, std::numeric_limits<float>::quiet_NaN()).to(dtype);
    EXPECT_TRUE(Silu(x).isnan().all().item<bool>());
  }
}

TEST(SiluTest, WithGradientsItIsLibTorchsSilu) {
  torch::Tensor x = Inputs({2, 3, 4, 4}).requires_grad_(true);
  torch::Tensor out = Silu(x);
  EXPECT_TRUE(torch::equal(out, torch::silu(x)));
  out.sum().backward();
  EXPECT_TRUE(x.grad().defined());
}

TEST(ScaledSiluTest, EqualsSiluOfTheScaledValuesInBothLayouts) {
  torch::InferenceMode inference;
  torch::Tensor x = Inputs({3, 40, 6, 6});
  torch::manual_seed(3);
  torch::Tensor scale = torch::rand({3, 40}) * 2;
  // The product is rounded to float32 before the SiLU, as the kernel does.
  torch::Tensor exact = Reference(x * scale.unsqueeze(2).unsqueeze(3));
  for (auto format : {torch::MemoryFormat::Contiguous, torch::MemoryFormat::ChannelsLast}) {
    torch::Tensor y = x.clone().contiguous(format);  // never x itself: it is changed in place
    torch::Tensor& result = ScaledSilu_(y, scale);
    EXPECT_EQ(result.data_ptr(), y.data_ptr()) << "in place";
    EXPECT_TRUE(y.is_contiguous(format));
    EXPECT_LE(MaxUlps(y, exact), 4.0);

    torch::Tensor b = x.to(torch::kBFloat16).contiguous(format);
    ScaledSilu_(b, scale);
    ExpectBf16Rounded(b, Reference(x.to(torch::kBFloat16).to(torch::kFloat32) * scale.unsqueeze(2).unsqueeze(3)));
  }
}

TEST(ScaledSiluTest, AnImagesValuesDoNotDependOnTheBatch) {
  torch::InferenceMode inference;
  torch::Tensor x = Inputs({5, 24, 7, 7}).to(torch::kBFloat16).contiguous(torch::MemoryFormat::ChannelsLast);
  torch::Tensor scale = torch::rand({5, 24});
  torch::Tensor batch = x.clone();
  ScaledSilu_(batch, scale);
  for (int64_t i = 0; i < 5; ++i) {
    torch::Tensor alone = x.slice(0, i, i + 1).clone();
    ScaledSilu_(alone, scale.slice(0, i, i + 1));
    EXPECT_TRUE(torch::equal(alone, batch.slice(0, i, i + 1))) << "image " << i;
  }
}

}  // namespace
}  // namespace tcm
