#include "common/cpu_features.h"

#include <gtest/gtest.h>

namespace tcm {
namespace {

TEST(CpuFeaturesTest, NativeBf16ComesFromTheFirstProcessorsFlags) {
  EXPECT_TRUE(CpuInfoHasNativeBf16("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"));
  EXPECT_TRUE(CpuInfoHasNativeBf16("processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile\n"));
  EXPECT_FALSE(CpuInfoHasNativeBf16("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw\n"));
  EXPECT_FALSE(CpuInfoHasNativeBf16("processor\t: 0\nflags\t\t: fpu avx512_bf16x\n")) << "whole flags only";
  EXPECT_FALSE(CpuInfoHasNativeBf16("model name\t: avx512_bf16 lookalike\n")) << "only the flags line counts";
  EXPECT_FALSE(CpuInfoHasNativeBf16(""));
  EXPECT_FALSE(CpuInfoHasNativeBf16("flags\t: avx2\n\nprocessor\t: 1\nflags\t: avx512_bf16\n"));
}

}  // namespace
}  // namespace tcm
