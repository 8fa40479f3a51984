#include "model/model_repository.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "model/test_fixtures.h"

namespace tcm {
namespace {
namespace fs = std::filesystem;

class ModelRepositoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("tcm_repo_test_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(root_);
    fixture_ = testing::LoadFixtureModel("ddpmpp_cond_tiny");
    dir_ = (root_ / "cond").string();
    std::vector<std::string> labels;
    for (int i = 0; i < 10; ++i) labels.push_back("class " + std::to_string(i));
    ASSERT_TRUE(WriteModelDirectory(dir_, fixture_.config, fixture_.weights, labels).ok());
  }
  void TearDown() override { fs::remove_all(root_); }

  void WriteFile(const std::string& name, const std::string& contents) {
    std::ofstream(fs::path(dir_) / name, std::ios::binary | std::ios::trunc) << contents;
  }
  // Replaces the first occurrence of `from` in file `name` by `to`.
  void EditFile(const std::string& name, const std::string& from, const std::string& to) {
    std::string contents = ReadFile(name);
    const size_t at = contents.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    WriteFile(name, contents.replace(at, from.size(), to));
  }
  std::string ReadFile(const std::string& name) {
    std::ifstream in(fs::path(dir_) / name, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  void ExpectLoadError(const std::string& fragment) {
    auto model = ReadModelDirectory(dir_);
    ASSERT_FALSE(model.ok()) << "expected an error containing: " << fragment;
    EXPECT_NE(model.status().message().find(fragment), absl::string_view::npos) << model.status();
    EXPECT_EQ(model.status().message().find('\n'), absl::string_view::npos);
  }

  fs::path root_;
  std::string dir_;
  ModelDirectory fixture_;
};

TEST_F(ModelRepositoryTest, WrittenDirectoryLoadsAndRunsLikeTheFixture) {
  auto model = ReadModelDirectory(dir_);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->name, "cond");
  EXPECT_EQ(model->labels.size(), 10u);
  EXPECT_EQ(model->labels[3], "class 3");
  auto replica = BuildReplica(*model);
  ASSERT_TRUE(replica.ok()) << replica.status();
  TensorMap io = testing::LoadFixtureIo("ddpmpp_cond_tiny");
  torch::InferenceMode inference;
  torch::Tensor out = (*replica)->forward(io.at("x"), io.at("sigma"), io.at("class_labels"));
  torch::Tensor ref = io.at("denoised");
  EXPECT_LT((out - ref).abs().max().item<double>() / ref.abs().max().item<double>(), 1e-5);
}

TEST_F(ModelRepositoryTest, RepositoryListsModelsByName) {
  ASSERT_TRUE(WriteModelDirectory((root_ / "another").string(), fixture_.config, fixture_.weights, {}).ok());
  fs::create_directories(root_ / "not-a-model");
  auto models = ReadModelRepository(root_.string());
  ASSERT_TRUE(models.ok()) << models.status();
  ASSERT_EQ(models->size(), 2u);
  EXPECT_EQ((*models)[0].name, "another");
  EXPECT_EQ((*models)[1].name, "cond");
}

TEST_F(ModelRepositoryTest, EmptyRepositoryIsAnError) {
  fs::create_directories(root_ / "empty");
  EXPECT_EQ(ReadModelRepository((root_ / "empty").string()).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ModelRepositoryTest, MissingConfig) {
  fs::remove(fs::path(dir_) / "config.pbtxt");
  ExpectLoadError("config.pbtxt: cannot open file");
}

TEST_F(ModelRepositoryTest, BadConfigValueNamesTheField) {
  EditFile("config.pbtxt", "default_steps: 1", "default_steps: 4");
  ExpectLoadError("config.pbtxt: default_steps: must be 1 or 2, got 4");
}

TEST_F(ModelRepositoryTest, ConfigDisagreeingWithWeightsNamesTheKey) {
  EditFile("config.pbtxt", "num_classes: 10", "num_classes: 12");
  ExpectLoadError("weights.safetensors: weight 'model.map_label.weight' has shape [32, 10] but the configuration "
                  "needs [32, 12]");
}

TEST_F(ModelRepositoryTest, TruncatedWeights) {
  std::string weights = ReadFile("weights.safetensors");
  WriteFile("weights.safetensors", weights.substr(0, weights.size() / 2));
  ExpectLoadError("out of range");
}

TEST_F(ModelRepositoryTest, GarbageWeights) {
  const char garbage[] = "\x05\x00\x00\x00\x00\x00\x00\x00{bad}";
  WriteFile("weights.safetensors", std::string(garbage, sizeof(garbage) - 1));
  ExpectLoadError("bad header");
}

TEST_F(ModelRepositoryTest, LabelCountMustMatchClasses) {
  WriteFile("labels.txt", "t-shirt\ntrouser\n");
  ExpectLoadError("labels.txt: has 2 class names but the model has num_classes = 10");
}

TEST_F(ModelRepositoryTest, ConfigNameOverridesDirectoryName) {
  WriteFile("config.pbtxt", "name: \"renamed\"\n" + ReadFile("config.pbtxt"));
  auto model = ReadModelDirectory(dir_);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->name, "renamed");
}

}  // namespace
}  // namespace tcm
