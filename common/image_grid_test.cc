#include "common/image_grid.h"

#include <gtest/gtest.h>

#include "common/splitmix.h"

namespace tcm {
namespace {

TEST(ImageGridTest, TilesLeftToRightTopToBottomWithBlackCells) {
  // Three 2x1 grey images (values 1..6) on two columns: a 4x2 grid, the last cell black.
  const uint8_t a[] = {1, 2}, b[] = {3, 4}, c[] = {5, 6};
  const std::string grid = TileImages({a, b, c}, /*width=*/2, /*height=*/1, /*channels=*/1, /*columns=*/2);
  EXPECT_EQ(grid, std::string("\x01\x02\x03\x04\x05\x06\x00\x00", 8));
}

TEST(ImageGridTest, KeepsRowsAndChannelsOfEachImage) {
  // Two 1x2 RGB images side by side: each grid row holds one row of each.
  const uint8_t a[] = {1, 1, 1, 2, 2, 2}, b[] = {3, 3, 3, 4, 4, 4};
  const std::string grid = TileImages({a, b}, /*width=*/1, /*height=*/2, /*channels=*/3, /*columns=*/2);
  EXPECT_EQ(grid, std::string("\x01\x01\x01\x03\x03\x03\x02\x02\x02\x04\x04\x04", 12));
}

TEST(ImageGridTest, SquareGridColumnsIsTheCeilingOfTheSquareRoot) {
  const int expected[] = {1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 4};  // n = 0..10
  for (int n = 0; n <= 10; ++n) EXPECT_EQ(SquareGridColumns(n), expected[n]) << n;
  EXPECT_EQ(SquareGridColumns(64), 8);
  EXPECT_EQ(SquareGridColumns(65), 9);
}

TEST(SplitMixTest, MatchesTheReferenceSequence) {
  // The first outputs of SplitMix64 seeded with 0 (state advanced by the gamma each step).
  EXPECT_EQ(SplitMix64(0), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(SplitMix64(kSplitMixGamma), 0x6e789e6aa1b965f4ULL);
}

}  // namespace
}  // namespace tcm
