#include "training/classifier.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "training/dataset.h"

namespace tcm {
namespace {

TEST(ClassifierTest, FeaturesAndLogitsHaveTheDocumentedShapes) {
  FashionClassifier classifier;
  classifier.eval();
  torch::InferenceMode inference;
  torch::Tensor x = torch::rand({3, 1, 32, 32}) * 2 - 1;
  EXPECT_EQ(classifier.Features(x).sizes(), (std::vector<int64_t>{3, kClassifierFeatures}));
  EXPECT_EQ(classifier.Logits(x).sizes(), (std::vector<int64_t>{3, kClassifierClasses}));
  ClassifierOutputs out = Classify(classifier, x, 2);  // two batches
  EXPECT_EQ(out.features.sizes(), (std::vector<int64_t>{3, kClassifierFeatures}));
  EXPECT_TRUE(torch::allclose(out.logits, classifier.Logits(x), 1e-5, 1e-5));
}

TEST(ClassifierTest, AccuracyCountsArgmaxMatches) {
  torch::Tensor logits = torch::tensor({{0.0f, 1.0f}, {2.0f, 1.0f}, {0.0f, 3.0f}, {5.0f, 0.0f}});
  EXPECT_DOUBLE_EQ(Accuracy(logits, torch::tensor(std::vector<int64_t>{1, 0, 0, 1})), 0.5);
}

TEST(ClassifierTest, SavedWeightsLoadBackAndBadOnesAreRejected) {
  torch::manual_seed(3);
  FashionClassifier classifier;
  classifier.eval();
  const std::string path = (std::filesystem::temp_directory_path() / "classifier_test.safetensors").string();
  ASSERT_TRUE(SaveClassifier(path, classifier, {{"note", "test"}}).ok());
  auto loaded = LoadClassifier(path);
  std::filesystem::remove(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  torch::Tensor x = torch::rand({2, 1, 32, 32}) * 2 - 1;
  torch::InferenceMode inference;
  EXPECT_TRUE(torch::equal((*loaded)->Logits(x), classifier.Logits(x)));

  TensorMap weights = classifier.StateDict();
  weights.erase("head.weight");
  absl::Status missing = FashionClassifier().LoadStateDict(weights, "w");
  EXPECT_NE(missing.message().find("missing tensor 'head.weight'"), std::string::npos) << missing;
  weights = classifier.StateDict();
  weights["head.weight"] = torch::zeros({3, 3});
  absl::Status shape = FashionClassifier().LoadStateDict(weights, "w");
  EXPECT_NE(shape.message().find("'head.weight' is Float [3, 3], expected Float [10, 128]"), std::string::npos)
      << shape;
}

TEST(ClassifierTest, TrainingRunsAndChecksItsInputs) {
  torch::Tensor images = torch::rand({40, 1, 32, 32}) * 2 - 1, labels = torch::arange(40) % 10;
  ClassifierTrainingOptions options;
  options.epochs = 1;
  options.batch_size = 16;
  int reports = 0;
  auto trained = TrainClassifier(images, labels, options, [&](const ClassifierTrainingProgress& p) {
    ++reports;
    EXPECT_EQ(p.images_total, 40);
  });
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_FALSE((*trained)->is_training());
  EXPECT_GE(reports, 1);
  auto again = TrainClassifier(images, labels, options, {});  // the seed fixes the result
  ASSERT_TRUE(again.ok());
  for (const auto& [name, tensor] : (*trained)->StateDict())
    EXPECT_TRUE(torch::equal(tensor, (*again)->StateDict().at(name))) << name;
  EXPECT_FALSE(TrainClassifier(torch::zeros({4, 1, 28, 28}), torch::zeros({4}, torch::kInt64), options, {}).ok());
}

TEST(ClassifierTest, TheProjectsClassifierRecognisesTestImages) {
  auto classifier = LoadClassifier(TCM_CLASSIFIER_PATH);
  ASSERT_TRUE(classifier.ok()) << classifier.status();
  auto test = LoadDataset("fashion-mnist", Split::kTest);
  ASSERT_TRUE(test.ok()) << test.status();
  auto images = ToModelInput(test->images.narrow(0, 0, 500), kClassifierResolution);
  ASSERT_TRUE(images.ok());
  const double accuracy = Accuracy(Classify(**classifier, *images).logits, test->labels.narrow(0, 0, 500));
  EXPECT_GT(accuracy, 0.85);
}

}  // namespace
}  // namespace tcm
