#include "model/model_repository.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "model/model_config.h"
#include "model/sampler.h"
#include "model/test_fixtures.h"

namespace tcm {
namespace {
namespace fs = std::filesystem;

class ModelRepositoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("tcm_repo_test_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
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
  ExpectLoadError(
      "weights.safetensors: weight 'model.map_label.weight' has shape [32, 10] but the configuration "
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

TEST_F(ModelRepositoryTest, LabelsMustBePrintableUtf8) {
  std::string names = "t-shirt\nTrouser \xc3\xa9t\xc3\xa9 \xe2\x9c\x93\n";  // UTF-8 beyond ASCII is fine
  for (int i = 2; i < 10; ++i) names += "class " + std::to_string(i) + "\n";
  WriteFile("labels.txt", names);
  auto model = ReadModelDirectory(dir_);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->labels[1], "Trouser \xc3\xa9t\xc3\xa9 \xe2\x9c\x93");
  for (const std::string bad :
       {"\xff", "\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "a\x1b[31m", "a\xc2\x9b31m"}) {
    WriteFile("labels.txt", "zero\n" + bad + "\n" + names.substr(names.find("class 2")));
    ExpectLoadError("labels.txt: line 2: must be UTF-8 text without control characters");
  }
}

TEST_F(ModelRepositoryTest, NonFiniteSettingsAreRefused) {
  EditFile("config.pbtxt", "sigma_data: 0.5", "sigma_data: inf");
  ExpectLoadError("config.pbtxt: sigma_data: must be a positive finite number, got inf");
  EditFile("config.pbtxt", "sigma_data: inf", "sigma_data: 0.5");
  EditFile("config.pbtxt", "t_max: 80", "t_max: inf");
  ExpectLoadError("config.pbtxt: t_max: must be a finite number in (0, 10000] (the released models use 80), got inf");
  EditFile("config.pbtxt", "t_max: inf", "t_max: 1e38");
  ExpectLoadError("config.pbtxt: t_max: must be a finite number in (0, 10000]");
}

TEST_F(ModelRepositoryTest, NonFiniteWeightsAreRefusedByName) {
  TensorMap weights = fixture_.weights;
  const std::string name = weights.begin()->first;
  for (const double bad : {std::nan(""), double(INFINITY)}) {
    weights[name] = fixture_.weights.at(name).clone();
    weights[name].view(-1)[0] = bad;
    ASSERT_TRUE(WriteModelDirectory(dir_, fixture_.config, weights, {}).ok());
    fs::remove(fs::path(dir_) / "labels.txt");
    ExpectLoadError(absl::StrCat("weights.safetensors: weight '", name, "' holds NaN or infinite values"));
  }
}

// Finiteness is checked in the dtype the network holds: an F64 weight of
// 1e300 is finite in the file and +inf as F32. F64 weights in range load.
TEST_F(ModelRepositoryTest, WeightsPastFloat32AreRefusedAfterConversion) {
  TensorMap weights;
  for (const auto& [key, value] : fixture_.weights) weights[key] = value.to(torch::kFloat64);
  ASSERT_TRUE(WriteModelDirectory(dir_, fixture_.config, weights, {}).ok());
  fs::remove(fs::path(dir_) / "labels.txt");
  auto in_range = ReadModelDirectory(dir_);
  ASSERT_TRUE(in_range.ok()) << in_range.status();
  auto replica = BuildReplica(*in_range);
  ASSERT_TRUE(replica.ok()) << replica.status();
  const std::string name = "model.map_label.weight";
  ASSERT_TRUE(weights.count(name));
  for (const double big : {1e300, -1e39}) {
    weights[name] = fixture_.weights.at(name).to(torch::kFloat64);
    weights[name].view(-1)[3] = big;
    ASSERT_TRUE(std::isfinite(weights[name].view(-1)[3].item<double>()));
    ASSERT_TRUE(WriteModelDirectory(dir_, fixture_.config, weights, {}).ok());
    ExpectLoadError(absl::StrCat("weights.safetensors: weight '", name,
                                 "' holds NaN or infinite values once converted from Double to Float"));
  }
}

TEST_F(ModelRepositoryTest, AModelNameMustBePlain) {
  WriteFile("config.pbtxt", "name: \"../../etc\"\n" + ReadFile("config.pbtxt"));
  ExpectLoadError("config.pbtxt: name: model name '../../etc': must be 1 to 200 letters, digits, '-', '_' and '.'");
  WriteFile("config.pbtxt",
            "name: \".staged\"\n" + ReadFile("config.pbtxt").substr(std::string("name: \"../../etc\"\n").size()));
  ExpectLoadError(
      "config.pbtxt: name: model name '.staged': must be 1 to 200 letters, digits, '-', '_' and '.', not "
      "starting with '.'");
  ASSERT_TRUE(WriteModelDirectory((root_ / "two words").string(), fixture_.config, fixture_.weights, {}).ok());
  auto spaced = ReadModelDirectory((root_ / "two words").string());
  ASSERT_FALSE(spaced.ok());
  EXPECT_NE(spaced.status().message().find("model name 'two words': must be"), absl::string_view::npos)
      << spaced.status();
}

// Files that are not regular files are refused by name, never waited for or
// read without end; nothing throws.
TEST_F(ModelRepositoryTest, ConfigThatIsAFifoIsRefusedNotWaitedFor) {
  fs::remove(fs::path(dir_) / "config.pbtxt");
  ASSERT_EQ(mkfifo((fs::path(dir_) / "config.pbtxt").c_str(), 0644), 0);
  ExpectLoadError("config.pbtxt: not a regular file");
}

TEST_F(ModelRepositoryTest, WeightsLinkedToADeviceAreRefused) {
  fs::remove(fs::path(dir_) / "weights.safetensors");
  fs::create_symlink("/dev/zero", fs::path(dir_) / "weights.safetensors");
  ExpectLoadError("weights.safetensors: not a regular file");
}

TEST_F(ModelRepositoryTest, LabelsInASymlinkLoopAreRefused) {
  fs::remove(fs::path(dir_) / "labels.txt");
  fs::create_symlink("labels.txt", fs::path(dir_) / "labels.txt");
  ExpectLoadError("labels.txt: cannot open file");
}

TEST_F(ModelRepositoryTest, OversizedConfigIsRefusedWithTheLimit) {
  WriteFile("config.pbtxt", ReadFile("config.pbtxt") + "# " + std::string(kMaxConfigFileBytes, 'x') + "\n");
  ExpectLoadError(absl::StrCat("bytes, more than the ", kMaxConfigFileBytes, " such a file may have"));
}

TEST_F(ModelRepositoryTest, RepositorySkipsEntriesItCannotExamine) {
  fs::create_symlink("loop", root_ / "loop");  // stat fails: too many levels of symbolic links
  auto models = ReadModelRepository(root_.string());
  ASSERT_TRUE(models.ok()) << models.status();
  ASSERT_EQ(models->size(), 1u);
  EXPECT_EQ((*models)[0].name, "cond");
}

TEST_F(ModelRepositoryTest, ConfigNameOverridesDirectoryName) {
  WriteFile("config.pbtxt", "name: \"renamed\"\n" + ReadFile("config.pbtxt"));
  auto model = ReadModelDirectory(dir_);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->name, "renamed");
}

}  // namespace
}  // namespace tcm

namespace tcm {
namespace {

// TCM's composition: the stage-1 network below t', the stage-2 network at and above.
class ComposeTruncatedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    above_ = testing::LoadFixtureModel("ddpmpp_cond_tiny");
    below_ = above_;
    torch::manual_seed(0);
    for (auto& [key, value] : below_.weights) value = value + 0.05 * torch::randn_like(value);
  }
  ModelDirectory above_, below_;
};

TEST_F(ComposeTruncatedTest, RowsBelowTransitionUseTheStageOneNetwork) {
  auto composed = ComposeTruncated(above_, below_, 1.0);
  ASSERT_TRUE(composed.ok()) << composed.status();
  EXPECT_FLOAT_EQ(composed->config.transition_t(), 1.0f);
  auto model = *BuildReplica(*composed);
  auto alone_above = *BuildReplica(above_);
  auto alone_below = *BuildReplica(below_);
  torch::InferenceMode inference;
  torch::manual_seed(1);
  const int64_t r = above_.config.img_resolution();
  const torch::Tensor x = torch::randn({4, above_.config.img_channels(), r, r});
  const torch::Tensor sigma = torch::tensor({0.5f, 80.0f, 0.821f, 1.0f});
  const torch::Tensor labels = torch::tensor({1, 2, 3, 4}, torch::kInt64);
  const torch::Tensor out = model->forward(x, sigma, labels);
  const torch::Tensor a = alone_above->forward(x, sigma, labels), b = alone_below->forward(x, sigma, labels);
  ASSERT_FALSE(torch::allclose(a, b, 1e-4, 1e-5));
  for (int64_t row : {0, 2}) EXPECT_TRUE(torch::allclose(out[row], b[row], 1e-4, 1e-5)) << row;
  for (int64_t row : {1, 3}) EXPECT_TRUE(torch::allclose(out[row], a[row], 1e-4, 1e-5)) << row;
  // In two shards of two rows, each with a row on either side: the same bits.
  const int threads_before = at::get_num_threads();
  at::set_num_threads(2);
  model->PrepareForInference();
  model->SetRowShards(true);
  EXPECT_TRUE(torch::equal(model->forward(x, sigma, labels), out));
  EXPECT_EQ(model->sharded_passes(), 1);
  model->SetRowShards(false);
  at::set_num_threads(threads_before);
  // A batch entirely on one side goes through that network alone.
  EXPECT_TRUE(torch::allclose(model->forward(x, torch::full({4}, 0.821f), labels),
                              alone_below->forward(x, torch::full({4}, 0.821f), labels), 1e-4, 1e-5));
}

TEST_F(ComposeTruncatedTest, TwoStepSamplingRunsTheSecondStepBelowTransition) {
  auto model = *BuildReplica(*ComposeTruncated(above_, below_, 1.0));
  auto alone_above = *BuildReplica(above_);
  auto alone_below = *BuildReplica(below_);
  torch::InferenceMode inference;
  const std::vector<ImageSpec> specs = {{7, 0, 3, 2}, {7, 1, 5, 1}};
  const torch::Tensor composed = SampleImages(*model, specs);
  // By hand: step 1 (t_max) on stage 2, step 2 (mid_t < t') on stage 1.
  const auto& c = above_.config;
  const torch::Tensor first = alone_above->forward(torch::stack({StepInput(c, 7, 0, 0, {}), StepInput(c, 7, 1, 0, {})}),
                                                   torch::full({2}, c.t_max()), torch::tensor({3, 5}, torch::kInt64));
  const torch::Tensor second = alone_below->forward(StepInput(c, 7, 0, 1, first[0]).unsqueeze(0),
                                                    torch::full({1}, c.mid_t()), torch::tensor({3}, torch::kInt64));
  EXPECT_TRUE(torch::allclose(composed[0], second[0], 1e-4, 1e-5));
  EXPECT_TRUE(torch::allclose(composed[1], first[1], 1e-4, 1e-5));
}

TEST_F(ComposeTruncatedTest, ComposedDirectoryRoundTrips) {
  const fs::path dir = fs::temp_directory_path() / ("tcm_composed_test_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  auto composed = *ComposeTruncated(above_, below_, 1.0);
  ASSERT_TRUE(WriteModelDirectory(dir.string(), composed.config, composed.weights, {}).ok());
  auto read = ReadModelDirectory(dir.string());
  fs::remove_all(dir);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_FLOAT_EQ(read->config.transition_t(), 1.0f);
  EXPECT_EQ(read->weights.size(), 2 * above_.weights.size());
  EXPECT_TRUE(read->weights.count("below_transition.model.map_noise.freqs") ||
              read->weights.count("below_transition.model.map_layer0.weight"));
}

TEST_F(ComposeTruncatedTest, RefusesMismatchedNetworksAndBadTransition) {
  ModelDirectory other = testing::LoadFixtureModel("ddpmpp_cifar_tiny");
  auto mismatch = ComposeTruncated(above_, other, 1.0);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.status().message().find("another network configuration"), std::string::npos);
  auto bad = ComposeTruncated(above_, below_, 100.0);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("transition_t: must be in (0, t_max = 80)"), std::string::npos) << bad.status();
  auto nested = ComposeTruncated(*ComposeTruncated(above_, below_, 1.0), below_, 1.0);
  EXPECT_FALSE(nested.ok());
}

// The first differing setting of the network's shape, named with both values;
// dropout (a training setting) is not part of it.
TEST_F(ComposeTruncatedTest, NetworkDifferenceNamesTheSetting) {
  EXPECT_EQ(NetworkDifference(above_.config, "A", below_.config, "B"), "");
  v1::ModelConfig wider = below_.config;
  wider.mutable_song()->set_model_channels(below_.config.song().model_channels() * 2);
  wider.mutable_song()->set_dropout(0.1f);
  EXPECT_EQ(NetworkDifference(above_.config, "A", wider, "B"),
            absl::StrCat("model_channels: A's ", above_.config.song().model_channels(), ", B's ",
                         wider.song().model_channels()));
  v1::ModelConfig only_dropout = below_.config;
  only_dropout.mutable_song()->set_dropout(0.2f);
  EXPECT_EQ(NetworkDifference(above_.config, "A", only_dropout, "B"), "");
  v1::ModelConfig more_classes = below_.config;
  more_classes.set_num_classes(below_.config.num_classes() + 1);
  EXPECT_EQ(NetworkDifference(above_.config, "A", more_classes, "B"),
            absl::StrCat("label_dim: A's ", above_.config.num_classes(), ", B's ", more_classes.num_classes()));
}

}  // namespace
}  // namespace tcm
