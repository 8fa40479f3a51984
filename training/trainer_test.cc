#include "training/trainer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "model/cpu_threads.h"
#include "model/model_config.h"
#include "training/dataset.h"
#include "training/losses.h"

namespace tcm {
namespace {

// A small EDM2 U-Net for 32x32 grey images and 10 classes.
v1::ModelConfig TinyConfig() {
  v1::ModelConfig c;
  c.set_architecture("EDM2UNet");
  c.set_img_resolution(32);
  c.set_img_channels(1);
  c.set_num_classes(10);
  auto* e = c.mutable_edm2();
  e->set_model_channels(8);
  e->add_channel_mult(1);
  e->add_channel_mult(2);
  e->set_num_blocks(1);
  e->clear_attn_resolutions();
  auto completed = CompleteModelConfig(c);
  EXPECT_TRUE(completed.ok()) << completed.status();
  return *completed;
}

// Random weights as initialised, except the output gain, which starts at zero
// (D = c_skip x for any weights) and is set to one here.
std::shared_ptr<Denoiser> TinyNet(uint64_t seed) {
  torch::manual_seed(seed);
  auto net = *Denoiser::Create(TinyConfig());
  torch::NoGradGuard no_grad;
  net->StateDict().at("model.out_gain").fill_(1.0);
  return net;
}

// The first `n` Fashion-MNIST training images in [-1, 1], padded to 32x32.
struct Data {
  torch::Tensor images, labels;
};
Data FashionImages(int64_t n) {
  auto data = LoadDataset("fashion-mnist", Split::kTrain);
  EXPECT_TRUE(data.ok()) << data.status();
  return {*ToModelInput(data->images.slice(0, 0, n), 32), data->labels.slice(0, 0, n)};
}

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override { ConfigureCpuThreads(1); }
};

double MeanLoss(Trainer& trainer, int steps) {
  double sum = 0;
  for (int i = 0; i < steps; ++i) sum += trainer.Step().loss;
  return sum / steps;
}

// Mean loss over the last 6 of 42 steps from random weights, relative to the first 6.
double LossRatioAfterShortRun(Stage stage) {
  const Data data = FashionImages(300);
  TrainOptions o;
  o.stage = stage;
  o.batch_size = 32;
  o.lr = 1e-2;
  o.double_every = 1000;  // consistency: one gap for the whole run
  auto trainer = *Trainer::Create(o, TinyNet(0), nullptr, data.images, data.labels);
  const double first = MeanLoss(*trainer, 6);
  for (int i = 0; i < 30; ++i) trainer->Step();
  return MeanLoss(*trainer, 6) / first;
}

TEST_F(TrainerTest, DiffusionLossFallsOnAFewHundredImages) {
  EXPECT_LT(LossRatioAfterShortRun(Stage::kDiffusion), 0.7);
}

TEST_F(TrainerTest, ConsistencyLossFallsOnAFewHundredImages) {
  EXPECT_LT(LossRatioAfterShortRun(Stage::kConsistency), 0.8);
}

TEST_F(TrainerTest, CompositionUsesTeacherBelowTransitionAndStudentAbove) {
  auto student = TinyNet(1), teacher = TinyNet(2);
  student->eval();
  teacher->eval();
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({4, 1, 32, 32});
  const torch::Tensor sigma = torch::tensor({0.5f, 1.0f, 0.99f, 5.0f});
  const torch::Tensor labels = torch::tensor({0, 1, 2, 3}, torch::kInt64);
  const torch::Tensor out = ComposedTarget(*student, {teacher.get(), 1.0}, x, sigma, labels);
  torch::NoGradGuard no_grad;
  const torch::Tensor from_student = student->forward(x, sigma, labels);
  const torch::Tensor from_teacher = teacher->forward(x, sigma, labels);
  EXPECT_FALSE(torch::allclose(from_student, from_teacher));
  for (int64_t row : {0, 2}) EXPECT_TRUE(torch::allclose(out[row], from_teacher[row], 1e-5, 1e-6)) << row;
  for (int64_t row : {1, 3}) EXPECT_TRUE(torch::allclose(out[row], from_student[row], 1e-5, 1e-6)) << row;
  // Stage 1: no teacher, the student everywhere.
  EXPECT_TRUE(torch::allclose(ComposedTarget(*student, {}, x, sigma, labels), from_student, 1e-5, 1e-6));
}

TEST_F(TrainerTest, StageTwoLossSplitsOffTheBoundaryRows) {
  const Data data = FashionImages(64);
  auto student = TinyNet(1), teacher = TinyNet(2);
  teacher->eval();
  ConsistencyLossOptions o;
  o.time.t_lower = 1.0;
  o.boundary_prob = 0.25;
  torch::manual_seed(4);
  const ConsistencyLossTerms terms =
      ConsistencyLoss(*student, {teacher.get(), 1.0}, data.images, data.labels, 0.99, o);
  EXPECT_EQ(terms.boundary.numel(), 16);
  EXPECT_EQ(terms.loss.numel(), 48);
  EXPECT_TRUE(terms.boundary.requires_grad());
  EXPECT_GT(terms.boundary.min().item<double>(), 0.0);
  // Stage 1 has no boundary rows.
  const ConsistencyLossTerms stage1 = ConsistencyLoss(*student, {}, data.images, data.labels, 0.5, o);
  EXPECT_EQ(stage1.boundary.numel(), 0);
  EXPECT_EQ(stage1.loss.numel(), 64);
}

// Two trainers from the same start, one interrupted by a checkpoint round
// trip, take the same next step.
TEST_F(TrainerTest, ResumeContinuesExactly) {
  const Data data = FashionImages(200);
  for (Stage stage : {Stage::kConsistency, Stage::kDiffusion}) {
    TrainOptions o;
    o.stage = stage;
    o.batch_size = 8;
    o.consistency.huber_c = 0.01;
    const std::string path =
        (std::filesystem::temp_directory_path() / ("tcm_resume_test_" + std::to_string(::getpid()) + ".pt")).string();
    auto uninterrupted = *Trainer::Create(o, TinyNet(5), nullptr, data.images, data.labels);
    torch::manual_seed(6);
    uninterrupted->Step();
    uninterrupted->Step();
    ASSERT_TRUE(uninterrupted->SaveCheckpoint(path).ok());
    const StepStats expected = uninterrupted->Step();

    torch::manual_seed(99);  // a different generator state, overwritten by the checkpoint
    auto resumed = *Trainer::Create(o, TinyNet(7), nullptr, data.images, data.labels);
    ASSERT_TRUE(resumed->LoadCheckpoint(path).ok());
    EXPECT_EQ(resumed->step(), 2);
    const StepStats got = resumed->Step();
    std::filesystem::remove(path);
    EXPECT_EQ(got.step, 3);
    EXPECT_DOUBLE_EQ(got.loss, expected.loss) << StageName(stage);
    EXPECT_DOUBLE_EQ(got.grad_norm, expected.grad_norm) << StageName(stage);
    const TensorMap a = uninterrupted->net().StateDict(), b = resumed->net().StateDict();
    const TensorMap ea = uninterrupted->ema().StateDict(), eb = resumed->ema().StateDict();
    for (const auto& [key, value] : a) {
      EXPECT_TRUE(torch::equal(value, b.at(key))) << key;
      EXPECT_TRUE(torch::equal(ea.at(key), eb.at(key))) << "ema " << key;
    }
  }
}

TEST_F(TrainerTest, CheckpointOfAnotherStageIsRefused) {
  const Data data = FashionImages(50);
  TrainOptions o;
  o.stage = Stage::kDiffusion;
  o.batch_size = 4;
  const std::string path =
      (std::filesystem::temp_directory_path() / ("tcm_stage_test_" + std::to_string(::getpid()) + ".pt")).string();
  auto diffusion = *Trainer::Create(o, TinyNet(0), nullptr, data.images, data.labels);
  ASSERT_TRUE(diffusion->SaveCheckpoint(path).ok());
  o.stage = Stage::kConsistency;
  auto consistency = *Trainer::Create(o, TinyNet(0), nullptr, data.images, data.labels);
  const absl::Status s = consistency->LoadCheckpoint(path);
  std::filesystem::remove(path);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("a checkpoint of the diffusion stage, not the consistency stage"), std::string::npos)
      << s.message();
}

TEST_F(TrainerTest, CreateRejectsMismatches) {
  const Data data = FashionImages(20);
  TrainOptions o;
  o.stage = Stage::kTruncated;
  auto no_teacher = Trainer::Create(o, TinyNet(0), nullptr, data.images, data.labels);
  ASSERT_FALSE(no_teacher.ok());
  EXPECT_NE(no_teacher.status().message().find("--teacher"), std::string::npos);
  o.stage = Stage::kDiffusion;
  auto small = Trainer::Create(o, TinyNet(0), nullptr, data.images.slice(2, 0, 16).slice(3, 0, 16), data.labels);
  ASSERT_FALSE(small.ok());
  EXPECT_NE(small.status().message().find("the model takes 1x32x32"), std::string::npos) << small.status();
  auto labels = Trainer::Create(o, TinyNet(0), nullptr, data.images, data.labels + 10);
  ASSERT_FALSE(labels.ok());
  EXPECT_NE(labels.status().message().find("the model has 10 classes"), std::string::npos) << labels.status();
}

}  // namespace
}  // namespace tcm
