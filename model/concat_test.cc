#include "model/concat.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace tcm {
namespace {

constexpr double kScaleA = 0.7321, kScaleB = 1.3127;

// What ScaledCat stands for, in float32 arithmetic and rounded once.
torch::Tensor Expected(const torch::Tensor& a, const torch::Tensor& b) {
  torch::Tensor joined = torch::cat(
      {a.to(torch::kFloat32) * static_cast<float>(kScaleA), b.to(torch::kFloat32) * static_cast<float>(kScaleB)}, 1);
  return joined.to(a.scalar_type());
}

struct Case {
  torch::ScalarType dtype;
  torch::MemoryFormat layout;
};

class ScaledCatTest : public testing::TestWithParam<Case> {};

TEST_P(ScaledCatTest, EqualsTheScaledConcatenationInTheInputsLayout) {
  torch::InferenceMode inference;
  torch::manual_seed(3);
  const Case c = GetParam();
  torch::Tensor a = torch::randn({3, 5, 7, 6}).to(c.dtype).contiguous(c.layout);
  torch::Tensor b = torch::randn({3, 11, 7, 6}).to(c.dtype).contiguous(c.layout);
  torch::Tensor out = ScaledCat(a, kScaleA, b, kScaleB);
  ASSERT_EQ(out.sizes(), torch::IntArrayRef({3, 16, 7, 6}));
  EXPECT_EQ(out.scalar_type(), c.dtype);
  EXPECT_TRUE(out.is_contiguous(c.layout));
  EXPECT_TRUE(torch::equal(out, Expected(a, b)));
}

TEST_P(ScaledCatTest, AnImagesResultDoesNotDependOnTheBatch) {
  torch::InferenceMode inference;
  torch::manual_seed(4);
  const Case c = GetParam();
  torch::Tensor a = torch::randn({5, 8, 4, 4}).to(c.dtype).contiguous(c.layout);
  torch::Tensor b = torch::randn({5, 24, 4, 4}).to(c.dtype).contiguous(c.layout);
  torch::Tensor batch = ScaledCat(a, kScaleA, b, kScaleB);
  for (int64_t i = 0; i < 5; ++i) {
    torch::Tensor alone =
        ScaledCat(a.narrow(0, i, 1).contiguous(c.layout), kScaleA, b.narrow(0, i, 1).contiguous(c.layout), kScaleB);
    EXPECT_TRUE(torch::equal(alone, batch.narrow(0, i, 1))) << "image " << i;
  }
}

TEST_P(ScaledCatTest, TheFusedSiluIsTheSiluOfTheConcatenationBitForBit) {
  torch::InferenceMode inference;
  torch::manual_seed(6);
  const Case c = GetParam();
  torch::Tensor a = (torch::randn({4, 9, 5, 6}) * 4).to(c.dtype).contiguous(c.layout);
  torch::Tensor b = (torch::randn({4, 23, 5, 6}) * 4).to(c.dtype).contiguous(c.layout);
  WithSilu both = ScaledCatAndSilu(a, kScaleA, b, kScaleB);
  torch::Tensor joined = ScaledCat(a, kScaleA, b, kScaleB);
  EXPECT_TRUE(both.value.is_contiguous(c.layout));
  EXPECT_TRUE(both.silu.is_contiguous(c.layout));
  EXPECT_TRUE(torch::equal(both.value, joined));
  EXPECT_TRUE(torch::equal(both.silu, Silu(joined)));
}

INSTANTIATE_TEST_SUITE_P(DtypesAndLayouts, ScaledCatTest,
                         testing::Values(Case{torch::kFloat32, torch::MemoryFormat::Contiguous},
                                         Case{torch::kFloat32, torch::MemoryFormat::ChannelsLast},
                                         Case{torch::kBFloat16, torch::MemoryFormat::Contiguous},
                                         Case{torch::kBFloat16, torch::MemoryFormat::ChannelsLast}));

TEST(ScaledCatFallbackTest, MixedLayoutsAndGradModeGiveTheSameValues) {
  torch::manual_seed(5);
  torch::Tensor a = torch::randn({2, 4, 5, 5}).contiguous(torch::MemoryFormat::ChannelsLast);
  torch::Tensor b = torch::randn({2, 3, 5, 5});
  {
    torch::InferenceMode inference;
    EXPECT_TRUE(torch::allclose(ScaledCat(a, kScaleA, b, kScaleB), Expected(a, b), 0, 1e-6));
    WithSilu both = ScaledCatAndSilu(a, kScaleA, b, kScaleB);  // mixed layouts: LibTorch's path, then Silu
    EXPECT_TRUE(torch::allclose(both.value, Expected(a, b), 0, 1e-6));
    EXPECT_TRUE(torch::equal(both.silu, Silu(both.value)));
  }
  torch::Tensor leaf = a.clone().requires_grad_(true);  // training takes LibTorch's path
  torch::Tensor out = ScaledCat(leaf, kScaleA, b, kScaleB);
  EXPECT_TRUE(out.requires_grad());
  out.sum().backward();
  EXPECT_TRUE(torch::allclose(leaf.grad(), torch::full_like(a, kScaleA)));
}

}  // namespace
}  // namespace tcm
