#include "training/trainer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
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
std::shared_ptr<Denoiser> TinyNet(uint64_t seed, float dropout = 0.0f) {
  torch::manual_seed(seed);
  v1::ModelConfig config = TinyConfig();
  config.mutable_edm2()->set_dropout(dropout);
  auto net = *Denoiser::Create(config);
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

// A copy of `weights`, kept while the originals change.
TensorMap Snapshot(const TensorMap& weights) {
  TensorMap copy;
  for (const auto& [key, value] : weights) copy.emplace(key, value.clone());
  return copy;
}

// Expects every tensor of `ema` to be before + weight (net - before); returns
// how many moved.
int ExpectEmaStep(const TensorMap& ema, const TensorMap& before, const TensorMap& net, double weight) {
  int moved = 0;
  for (const auto& [key, value] : ema) {
    EXPECT_TRUE(torch::allclose(value, before.at(key) + weight * (net.at(key) - before.at(key)), 1e-6, 1e-7)) << key;
    moved += !torch::equal(value, before.at(key));
  }
  return moved;
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

TEST_F(TrainerTest, CompositionDrawsTheSameDropoutMasksInTeacherAndStudent) {
  auto student = TinyNet(1, 0.5f), teacher = TinyNet(2, 0.5f);
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({4, 1, 32, 32});
  const torch::Tensor sigma = torch::tensor({0.5f, 5.0f, 0.9f, 2.0f});
  const torch::Tensor labels = torch::tensor({0, 1, 2, 3}, torch::kInt64);
  const torch::Tensor start = CpuGeneratorState();
  const torch::Tensor out = ComposedTarget(*student, {teacher.get(), 1.0}, x, sigma, labels);
  const torch::Tensor end = CpuGeneratorState();

  torch::NoGradGuard no_grad;
  SkipForcedWeightNormalization keep_weights;
  SetCpuGeneratorState(start);
  const torch::Tensor from_teacher = teacher->forward(x, sigma, labels);
  SetCpuGeneratorState(start);
  const torch::Tensor from_student = student->forward(x, sigma, labels);
  // The generator ends after the student's draws, as if the teacher had not run.
  EXPECT_TRUE(torch::equal(CpuGeneratorState(), end));
  // Dropout is on in both: other masks give other outputs.
  EXPECT_FALSE(torch::allclose(student->forward(x, sigma, labels), from_student, 1e-4, 1e-5));
  for (int64_t row : {0, 2}) EXPECT_TRUE(torch::equal(out[row], from_teacher[row])) << row;
  for (int64_t row : {1, 3}) EXPECT_TRUE(torch::equal(out[row], from_student[row])) << row;
}

TEST_F(TrainerTest, StageTwoLossSplitsOffTheBoundaryRows) {
  const Data data = FashionImages(64);
  auto student = TinyNet(1), teacher = TinyNet(2);
  teacher->eval();
  ConsistencyLossOptions o;
  o.time.t_lower = 1.0;
  o.boundary_prob = 0.25;
  torch::manual_seed(4);
  const ConsistencyLossTerms terms = ConsistencyLoss(*student, {teacher.get(), 1.0}, data.images, data.labels, 0.99, o);
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
  for (Stage stage : {Stage::kConsistency, Stage::kDiffusion, Stage::kTruncated}) {
    TrainOptions o;
    o.stage = stage;
    o.batch_size = 8;
    o.consistency.huber_c = 0.01;
    o.consistency.boundary_prob = 0.25;
    o.ema_type = "power";
    o.ema_gamma_candidates = {3.0};
    const bool truncated = stage == Stage::kTruncated;
    if (truncated) o.consistency.time.t_lower = 1.0;
    // Dropout on where the reference trains with it: the masks come from the
    // generator, whose state the checkpoint carries.
    const float dropout = stage == Stage::kDiffusion ? 0.0f : 0.1f;
    std::shared_ptr<Denoiser> teacher = truncated ? TinyNet(8, dropout) : nullptr;
    const std::string path =
        (std::filesystem::temp_directory_path() / ("tcm_resume_test_" + std::to_string(::getpid()) + ".pt")).string();
    auto uninterrupted = *Trainer::Create(o, TinyNet(5, dropout), teacher, data.images, data.labels);
    torch::manual_seed(6);
    uninterrupted->Step();
    uninterrupted->Step();
    ASSERT_TRUE(uninterrupted->SaveCheckpoint(path).ok());
    const StepStats expected = uninterrupted->Step();

    torch::manual_seed(99);  // a different generator state, overwritten by the checkpoint
    auto resumed = *Trainer::Create(o, TinyNet(7, dropout), teacher, data.images, data.labels);
    ASSERT_TRUE(resumed->LoadCheckpoint(path).ok());
    EXPECT_EQ(resumed->step(), 2);
    const StepStats got = resumed->Step();
    std::filesystem::remove(path);
    EXPECT_EQ(got.step, 3);
    EXPECT_DOUBLE_EQ(got.loss, expected.loss) << StageName(stage);
    EXPECT_DOUBLE_EQ(got.grad_norm, expected.grad_norm) << StageName(stage);
    EXPECT_DOUBLE_EQ(got.boundary, expected.boundary) << StageName(stage);
    if (truncated) EXPECT_GT(got.boundary, 0.0);
    const TensorMap a = uninterrupted->net().StateDict(), b = resumed->net().StateDict();
    const TensorMap ea = uninterrupted->ema().StateDict(), eb = resumed->ema().StateDict();
    for (const auto& [key, value] : a) {
      EXPECT_TRUE(torch::equal(value, b.at(key))) << key;
      EXPECT_TRUE(torch::equal(ea.at(key), eb.at(key))) << "ema " << key;
    }
    const TensorMap ca = uninterrupted->candidate_ema(0).StateDict(), cb = resumed->candidate_ema(0).StateDict();
    for (const auto& [key, value] : ca) EXPECT_TRUE(torch::equal(value, cb.at(key))) << "candidate ema " << key;
  }
}

// Learning rate lr / sqrt(max(i / decay_iter, 1)) * min(i / rampup_iter, 1),
// with i the steps done before this one (the reference's count).
TEST_F(TrainerTest, LearningRateFollowsDecayAndRampUp) {
  const Data data = FashionImages(20);
  TrainOptions o;
  o.stage = Stage::kDiffusion;
  o.batch_size = 2;
  o.lr = 1e-3;
  o.decay_iter = 2;
  auto decaying = *Trainer::Create(o, TinyNet(0), nullptr, data.images, data.labels);
  for (double expected : {1e-3, 1e-3, 1e-3, 1e-3 / std::sqrt(1.5), 1e-3 / std::sqrt(2.0)})
    EXPECT_DOUBLE_EQ(decaying->Step().lr, expected);
  o.decay_iter = 0;
  o.rampup_iter = 4;
  auto ramping = *Trainer::Create(o, TinyNet(0), nullptr, data.images, data.labels);
  for (double expected : {0.0, 0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 1e-3}) EXPECT_DOUBLE_EQ(ramping->Step().lr, expected);
}

// Power EMA: beta = (1 - 1/step)^(gamma + 1), 0 at the first step (the EMA
// becomes the network). Constant EMA: ema += (1 - beta) (net - ema).
TEST_F(TrainerTest, EmaFollowsItsSchedule) {
  const Data data = FashionImages(20);
  TrainOptions o;
  o.stage = Stage::kDiffusion;
  o.batch_size = 2;
  o.ema_type = "power";
  auto power = *Trainer::Create(o, TinyNet(0), nullptr, data.images, data.labels);
  power->Step();
  for (const auto& [key, value] : power->net().StateDict())
    EXPECT_TRUE(torch::equal(power->ema().StateDict().at(key), value)) << key;

  o.ema_type = "constant";
  o.ema_beta = 0.75;
  auto constant = *Trainer::Create(o, TinyNet(0), nullptr, data.images, data.labels);
  const TensorMap before = Snapshot(constant->ema().StateDict());
  constant->Step();
  EXPECT_GT(ExpectEmaStep(constant->ema().StateDict(), before, constant->net().StateDict(), 0.25), 0);
}

// Each candidate EMA follows the power schedule of its own gamma; one with
// the main gamma matches the main EMA exactly.
TEST_F(TrainerTest, CandidateEmasFollowTheirOwnGamma) {
  const Data data = FashionImages(20);
  TrainOptions o;
  o.stage = Stage::kDiffusion;
  o.batch_size = 2;
  o.ema_type = "power";
  o.ema_gamma = 6.0;
  o.ema_gamma_candidates = {6.0, 2.0};
  auto trainer = *Trainer::Create(o, TinyNet(0), nullptr, data.images, data.labels);
  trainer->Step();  // beta 0: every EMA becomes the network
  const TensorMap before = Snapshot(trainer->candidate_ema(1).StateDict());
  trainer->Step();  // beta = (1 - 1/2)^(gamma + 1)
  const TensorMap net = trainer->net().StateDict(), main = trainer->ema().StateDict(),
                  same = trainer->candidate_ema(0).StateDict(), other = trainer->candidate_ema(1).StateDict();
  ExpectEmaStep(other, before, net, 1.0 - std::pow(0.5, 3.0));
  int differs = 0;
  for (const auto& [key, value] : main) {
    EXPECT_TRUE(torch::equal(same.at(key), value)) << key;
    differs += !torch::equal(other.at(key), value);
  }
  EXPECT_GT(differs, 0);
}

TEST_F(TrainerTest, EmaCandidatesNeedPositiveGammasAndThePowerEma) {
  const Data data = FashionImages(20);
  TrainOptions o;
  o.ema_gamma_candidates = {3.0};
  auto constant = Trainer::Create(o, TinyNet(0), nullptr, data.images, data.labels);
  ASSERT_FALSE(constant.ok());
  EXPECT_EQ(constant.status().message(), "--ema_gamma_candidates: needs --ema_type=power");
  o.ema_type = "power";
  o.ema_gamma_candidates = {3.0, 0.0};
  auto zero = Trainer::Create(o, TinyNet(0), nullptr, data.images, data.labels);
  ASSERT_FALSE(zero.ok());
  EXPECT_EQ(zero.status().message(), "--ema_gamma_candidates: each gamma must be positive, got 0");
}

// The gap ratio 1 - 1/q^(stage + 1), stage = start_stage + steps done / double_every.
TEST_F(TrainerTest, GapRatioAdvancesEveryDoubleEverySteps) {
  const Data data = FashionImages(20);
  TrainOptions o;
  o.stage = Stage::kConsistency;
  o.batch_size = 2;
  o.double_every = 2;
  auto from_zero = *Trainer::Create(o, TinyNet(0), nullptr, data.images, data.labels);
  for (double expected : {0.5, 0.5, 0.75, 0.75, 0.875}) EXPECT_DOUBLE_EQ(from_zero->Step().ratio, expected);
  o.start_stage = 9;  // 1 - 1/1024 = 0.99902..., above the 0.999 limit
  auto late = *Trainer::Create(o, TinyNet(0), nullptr, data.images, data.labels);
  EXPECT_DOUBLE_EQ(late->Step().ratio, 0.999);
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
