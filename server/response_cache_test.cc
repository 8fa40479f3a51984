#include "server/response_cache.h"

#include <gtest/gtest.h>

namespace tcm {
namespace {

ImageKey Key(unsigned index, uint64_t seed = 7, unsigned version = 1) {
  return ImageKey{"m", version, 3, 2, seed, index, 0};
}

v1::Image Image(unsigned index, size_t bytes) {
  v1::Image image;
  image.set_data(std::string(bytes, static_cast<char>('a' + index)));
  image.set_index(index);
  return image;
}

TEST(ResponseCacheTest, AnImageIsServedBackUnderItsExactKeyOnly) {
  ResponseCache cache(1 << 20);
  cache.Insert(Key(0), Image(0, 100));
  auto hit = cache.Lookup(Key(0));
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->data(), std::string(100, 'a'));
  EXPECT_FALSE(cache.Lookup(Key(0, /*seed=*/8)).has_value());
  EXPECT_FALSE(cache.Lookup(Key(1)).has_value());
  EXPECT_FALSE(cache.Lookup(Key(0, 7, /*version=*/2)).has_value());  // a reloaded model
  ImageKey other_format = Key(0);
  other_format.format = 1;
  EXPECT_FALSE(cache.Lookup(other_format).has_value());
  ImageKey other_steps = Key(0);
  other_steps.steps = 1;
  EXPECT_FALSE(cache.Lookup(other_steps).has_value());
  ImageKey other_class = Key(0);
  other_class.class_label = 4;
  EXPECT_FALSE(cache.Lookup(other_class).has_value());
  ImageKey other_model = Key(0);
  other_model.model = "n";
  EXPECT_FALSE(cache.Lookup(other_model).has_value());
}

TEST(ResponseCacheTest, TheLeastRecentlyUsedGoFirstByBytes) {
  // Indices 1..4 (non-zero, so every entry serializes to the same size).
  ResponseCache probe(1 << 20);
  probe.Insert(Key(1), Image(1, 1000));
  const size_t one = probe.bytes();  // one entry's size
  ASSERT_GT(one, 1000u);
  ResponseCache cache(3 * one);
  for (unsigned i = 1; i <= 3; ++i) cache.Insert(Key(i), Image(i, 1000));
  EXPECT_EQ(cache.entries(), 3u);
  EXPECT_EQ(cache.bytes(), 3 * one);
  ASSERT_TRUE(cache.Lookup(Key(1)).has_value());  // 1 is now the most recent
  cache.Insert(Key(4), Image(4, 1000));           // evicts 2, the least recent
  EXPECT_TRUE(cache.Lookup(Key(1)).has_value());
  EXPECT_FALSE(cache.Lookup(Key(2)).has_value());
  EXPECT_TRUE(cache.Lookup(Key(3)).has_value());
  EXPECT_TRUE(cache.Lookup(Key(4)).has_value());
  EXPECT_LE(cache.bytes(), 3 * one);
}

TEST(ResponseCacheTest, ReplacingAKeyKeepsOneEntryAndTooLargeImagesAreNotKept) {
  ResponseCache cache(5000);
  cache.Insert(Key(0), Image(0, 100));
  cache.Insert(Key(0), Image(0, 200));
  EXPECT_EQ(cache.entries(), 1u);
  EXPECT_EQ(cache.Lookup(Key(0))->data().size(), 200u);
  cache.Insert(Key(1), Image(1, 10000));
  EXPECT_FALSE(cache.Lookup(Key(1)).has_value());
  EXPECT_EQ(cache.entries(), 1u) << "a too-large image evicts nothing";
  cache.Insert(Key(0), Image(0, 10000));
  EXPECT_EQ(cache.entries(), 0u) << "replaced by an image too large to keep";
  EXPECT_EQ(cache.bytes(), 0u);
}

}  // namespace
}  // namespace tcm
