#include "training/evaluation.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

namespace tcm {
namespace {

TEST(EvaluationTest, Quantize8BitRoundsToTheLevelsAServedPngHolds) {
  const torch::Tensor in = torch::tensor({-1.5f, -1.0f, 0.0f, 0.3f, 1.0f, 2.0f});
  const torch::Tensor out = Quantize8Bit(in);
  // 0.3 -> 0.3 * 127.5 + 127.5 = 165.75 -> 166 -> 166 / 127.5 - 1.
  const std::vector<float> expected = {-1.0f, -1.0f, 128 / 127.5f - 1, 166 / 127.5f - 1, 1.0f, 1.0f};
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_FLOAT_EQ(out[i].item<float>(), expected[i]) << i;
}

TEST(EvaluationTest, ClassifyInChunksEqualsOnePassAndReportsEachChunk) {
  torch::manual_seed(3);
  FashionClassifier classifier;
  classifier.eval();
  const torch::Tensor images = torch::rand({11, 1, 32, 32}) * 2 - 1;
  std::vector<int64_t> reported;
  const ClassifierOutputs chunked =
      ClassifyInChunks(classifier, images, /*chunk=*/4, [&](int64_t done) { reported.push_back(done); });
  const ClassifierOutputs whole = Classify(classifier, images);
  EXPECT_EQ(reported, (std::vector<int64_t>{4, 8, 11}));
  EXPECT_TRUE(torch::allclose(chunked.features, whole.features, 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(chunked.logits, whole.logits, 1e-5, 1e-5));
}

// Image i of a fake sampler: a flat image whose level depends on i, so that
// the classifier sees several different images.
torch::Tensor FakeImage(uint64_t index) { return torch::full({1, 32, 32}, -1.0 + 0.29 * double(index % 8)); }

// The fake sampler's batch: FakeImage of each spec's index.
torch::Tensor FakeImages(const std::vector<ImageSpec>& specs) {
  std::vector<torch::Tensor> images;
  for (const ImageSpec& spec : specs) images.push_back(FakeImage(spec.index));
  return torch::stack(images);
}

TEST(EvaluationTest, EvaluateSamplerDrawsEveryImageOnceAndScoresTheQuantisedImages) {
  torch::manual_seed(5);
  FashionClassifier classifier;
  classifier.eval();
  SamplingPlan plan;
  plan.num = 23;
  plan.batch_size = 5;
  plan.seed = 77;
  std::vector<std::vector<ImageSpec>> calls;
  const ImageSampler sampler = [&](const std::vector<ImageSpec>& specs) {
    calls.push_back(specs);
    return FakeImages(specs);
  };
  const FeatureStatistics reference = ComputeFeatureStatistics(torch::randn({50, kClassifierFeatures}));
  std::vector<int64_t> reported;
  const StepResult result = EvaluateSampler(sampler, /*steps=*/2, "fake", plan, classifier, reference,
                                            [&](int64_t done) { reported.push_back(done); });

  // Batches of 5, 5, 5, 5, 3 covering images 0..22 once, class i % 10, the plan's seed and the steps asked.
  ASSERT_EQ(calls.size(), 5u);
  EXPECT_EQ(calls.back().size(), 3u);
  EXPECT_EQ(reported, (std::vector<int64_t>{5, 10, 15, 20, 23}));
  uint64_t next = 0;
  for (const auto& call : calls) {
    for (const ImageSpec& spec : call) {
      EXPECT_EQ(spec.index, next);
      EXPECT_EQ(spec.class_label, int64_t(next % 10));
      EXPECT_EQ(spec.seed, 77u);
      EXPECT_EQ(spec.steps, 2);
      ++next;
    }
  }
  EXPECT_EQ(next, 23u);

  // The same scores computed directly on all 23 quantised images at once.
  std::vector<torch::Tensor> all;
  for (uint64_t i = 0; i < 23; ++i) all.push_back(FakeImage(i));
  const ClassifierOutputs direct = Classify(classifier, Quantize8Bit(torch::stack(all)));
  const torch::Tensor predicted = direct.logits.argmax(1);
  int correct = 0;
  std::vector<int> correct_by_class(10, 0), count_by_class(10, 0);
  for (int64_t i = 0; i < 23; ++i) {
    const bool hit = predicted[i].item<int64_t>() == i % 10;
    correct += hit;
    correct_by_class[i % 10] += hit;
    ++count_by_class[i % 10];
  }
  EXPECT_DOUBLE_EQ(result.accuracy, correct / 23.0);
  ASSERT_EQ(result.class_accuracy.size(), 10u);
  for (int c = 0; c < 10; ++c) {
    ASSERT_TRUE(result.class_accuracy[c].has_value()) << c;
    EXPECT_DOUBLE_EQ(*result.class_accuracy[c], double(correct_by_class[c]) / count_by_class[c]) << c;
  }
  EXPECT_NEAR(result.fd, FrechetDistance(ComputeFeatureStatistics(direct.features), reference),
              1e-6 * std::max(1.0, result.fd));
  // The features kept are the scored images', in image order.
  EXPECT_TRUE(torch::allclose(result.features, direct.features, 1e-5, 1e-5));
  EXPECT_EQ(result.steps, 2);
  EXPECT_EQ(result.sampler, "fake");
  EXPECT_GT(result.images_per_second, 0);
}

// With fewer images than classes, the classes no image requested have no
// accuracy (not an accuracy of 0); the others are scored as usual.
TEST(EvaluationTest, EvaluateSamplerGivesNoAccuracyForClassesNoImageRequested) {
  torch::manual_seed(5);
  FashionClassifier classifier;
  classifier.eval();
  SamplingPlan plan;
  plan.num = 3;
  plan.batch_size = 2;
  const ImageSampler sampler = FakeImages;
  const FeatureStatistics reference = ComputeFeatureStatistics(torch::randn({50, kClassifierFeatures}));
  const StepResult result = EvaluateSampler(sampler, /*steps=*/1, "fake", plan, classifier, reference, {});

  std::vector<torch::Tensor> all;
  for (uint64_t i = 0; i < 3; ++i) all.push_back(FakeImage(i));
  const torch::Tensor predicted = Classify(classifier, Quantize8Bit(torch::stack(all))).logits.argmax(1);
  ASSERT_EQ(result.class_accuracy.size(), 10u);
  int correct = 0;
  for (int c = 0; c < 3; ++c) {
    const bool hit = predicted[c].item<int64_t>() == c;
    correct += hit;
    ASSERT_TRUE(result.class_accuracy[c].has_value()) << c;
    EXPECT_DOUBLE_EQ(*result.class_accuracy[c], hit ? 1.0 : 0.0) << c;
  }
  for (int c = 3; c < 10; ++c)
    EXPECT_FALSE(result.class_accuracy[c].has_value()) << c << ": " << result.class_accuracy[c].value_or(-1);
  EXPECT_DOUBLE_EQ(result.accuracy, correct / 3.0);
}

}  // namespace
}  // namespace tcm
