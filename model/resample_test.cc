#include "model/resample.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace tcm {
namespace {

TEST(ResampleTest, ChannelsLastNearestUpsamplingCopiesLibTorchsValuesAndKeepsTheLayout) {
  torch::InferenceMode inference;
  torch::manual_seed(21);
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    for (int64_t channels : {1, 3, 32, 37}) {
      torch::Tensor x = torch::randn({3, channels, 5, 4}).to(dtype).contiguous(torch::MemoryFormat::ChannelsLast);
      torch::Tensor up = Resample(x, /*filter2d=*/{}, /*is_box=*/true, ResampleMode::kUp);
      ASSERT_EQ(up.sizes(), torch::IntArrayRef({3, channels, 10, 8}));
      EXPECT_EQ(up.scalar_type(), dtype);
      EXPECT_TRUE(up.is_contiguous(torch::MemoryFormat::ChannelsLast)) << channels;
      EXPECT_TRUE(torch::equal(up, torch::upsample_nearest2d(x.contiguous(), {10, 8}))) << channels;
      // Each output pixel (2i + a, 2j + b) is input pixel (i, j).
      EXPECT_TRUE(torch::equal(up.slice(2, 1, 10, 2).slice(3, 0, 8, 2), x)) << channels;
    }
  }
}

TEST(ResampleTest, BoxDownsamplingAveragesEachTwoByTwoSquare) {
  torch::InferenceMode inference;
  torch::Tensor x = torch::arange(16, torch::kFloat32).reshape({1, 1, 4, 4});
  torch::Tensor down = Resample(x, /*filter2d=*/{}, /*is_box=*/true, ResampleMode::kDown);
  EXPECT_TRUE(torch::equal(down, torch::tensor({2.5f, 4.5f, 10.5f, 12.5f}).reshape({1, 1, 2, 2})));
}

// A filter other than the box ([1, 3, 3, 1], EDM2's own default in its
// paper's ablations) halves and doubles the size exactly, and bf16 gives
// float32's values to bf16's precision, in both layouts.
TEST(ResampleTest, AFilteredResampleKeepsTheSizeRuleInEveryPrecisionAndLayout) {
  torch::InferenceMode inference;
  torch::manual_seed(22);
  const torch::Tensor filter = ResampleFilter2d({1, 3, 3, 1});
  for (auto format : {torch::MemoryFormat::Contiguous, torch::MemoryFormat::ChannelsLast}) {
    torch::Tensor x = torch::randn({2, 8, 16, 16}).contiguous(format);
    torch::Tensor down = Resample(x, filter, /*is_box=*/false, ResampleMode::kDown);
    torch::Tensor up = Resample(x, filter, /*is_box=*/false, ResampleMode::kUp);
    ASSERT_EQ(down.sizes(), torch::IntArrayRef({2, 8, 8, 8}));
    ASSERT_EQ(up.sizes(), torch::IntArrayRef({2, 8, 32, 32}));
    torch::Tensor x16 = x.to(torch::kBFloat16);
    torch::Tensor down16 = Resample(x16, filter, /*is_box=*/false, ResampleMode::kDown);
    torch::Tensor up16 = Resample(x16, filter, /*is_box=*/false, ResampleMode::kUp);
    ASSERT_EQ(down16.sizes(), down.sizes());
    ASSERT_EQ(up16.sizes(), up.sizes());
    EXPECT_EQ(up16.scalar_type(), torch::kBFloat16);
    EXPECT_LT((down16.to(torch::kFloat32) - down).abs().max().item<float>(), 0.05);
    EXPECT_LT((up16.to(torch::kFloat32) - up).abs().max().item<float>(), 0.05);
  }
}

}  // namespace
}  // namespace tcm
