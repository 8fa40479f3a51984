#include "training/trainer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>

#include "absl/strings/str_cat.h"
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
  EXPECT_EQ(zero.status().message(), "--ema_gamma_candidates: each gamma must be positive and finite, got 0");
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

// Every numeric option out of its range (NaN included) is one line naming the
// flag, its range and the value given.
TEST(CheckTrainOptionsTest, RefusesEachOptionOutOfItsRange) {
  EXPECT_TRUE(CheckTrainOptions(TrainOptions()).ok());
  const double nan = std::nan(""), inf = INFINITY;
  const std::vector<std::pair<std::function<void(TrainOptions&)>, std::string>> cases = {
      {[](TrainOptions& o) { o.batch_size = 0; }, "--batch_size: must be in [1, 65536], got 0"},
      {[](TrainOptions& o) { o.batch_size = 1000000000000; }, "--batch_size: must be in [1, 65536], got 1000000000000"},
      {[&](TrainOptions& o) { o.lr = nan; }, "--lr: must be positive and finite, got nan"},
      {[](TrainOptions& o) { o.lr = 0; }, "--lr: must be positive and finite, got 0"},
      {[](TrainOptions& o) { o.beta1 = 1; }, "--beta1: must be in [0, 1), got 1"},
      {[](TrainOptions& o) { o.beta2 = -0.5; }, "--beta2: must be in [0, 1), got -0.5"},
      {[](TrainOptions& o) { o.adam_eps = 0; }, "--adam_eps: must be positive and finite, got 0"},
      {[](TrainOptions& o) { o.decay_iter = -1; }, "--decay_iter: must be 0 or more, got -1"},
      {[](TrainOptions& o) { o.rampup_iter = -1; }, "--rampup_iter: must be 0 or more, got -1"},
      {[](TrainOptions& o) { o.grad_clip = -1; }, "--grad_clip: must be positive, got -1"},
      {[](TrainOptions& o) { o.ema_gamma = -1; }, "--ema_gamma: must be positive and finite, got -1"},
      {[&](TrainOptions& o) { o.ema_gamma = nan; }, "--ema_gamma: must be positive and finite, got nan"},
      {[&](TrainOptions& o) { o.ema_gamma = inf; }, "--ema_gamma: must be positive and finite, got inf"},
      {[](TrainOptions& o) { o.ema_beta = 1; }, "--ema_beta: must be in [0, 1), got 1"},
      {[](TrainOptions& o) { o.ema_beta = -0.1; }, "--ema_beta: must be in [0, 1), got -0.1"},
      {[&](TrainOptions& o) { o.diffusion.p_mean = inf; }, "--diffusion_mean: must be finite, got inf"},
      {[](TrainOptions& o) { o.diffusion.p_std = -1; }, "--diffusion_std: must be positive and finite, got -1"},
      {[&](TrainOptions& o) { o.consistency.time.mean = nan; }, "--mean: must be finite, got nan"},
      {[](TrainOptions& o) { o.consistency.time.std = 0; }, "--std: must be positive and finite, got 0"},
      {[&](TrainOptions& o) { o.consistency.time.df = inf; }, "--df: must be positive and finite, got inf"},
      {[](TrainOptions& o) { o.consistency.time.t_lower = 0; }, "--t_lower: must be positive and finite, got 0"},
      {[&](TrainOptions& o) { o.consistency.time.t_upper = inf; },
       "--t_upper: must be finite and above --t_lower (0.002), got inf"},
      {[](TrainOptions& o) { o.consistency.huber_c = -1; }, "--c: must be 0 or more and finite, got -1"},
      {[&](TrainOptions& o) { o.consistency.boundary_prob = nan; }, "--boundary_prob: must be in [0, 1), got nan"},
      {[](TrainOptions& o) { o.q = 1; }, "--q: must be above 1 and finite, got 1"},
      {[](TrainOptions& o) { o.q = 0.5; }, "--q: must be above 1 and finite, got 0.5"},
      {[](TrainOptions& o) { o.ratio_limit = 0; }, "--ratio_limit: must be in (0, 0.99999], got 0"},
      {[](TrainOptions& o) { o.ratio_limit = 1.5; }, "--ratio_limit: must be in (0, 0.99999], got 1.5"},
      {[](TrainOptions& o) { o.ratio_limit = 1; }, "--ratio_limit: must be in (0, 0.99999], got 1"},
      {[](TrainOptions& o) { o.double_every = 0; }, "--double_every: must be at least 1, got 0"},
      {[](TrainOptions& o) { o.start_stage = -1; }, "--start_stage: must be in [0, 1000000], got -1"},
      {[](TrainOptions& o) { o.start_stage = std::numeric_limits<int64_t>::max(); },
       "--start_stage: must be in [0, 1000000], got 9223372036854775807"},
      {[](TrainOptions& o) {
         o.stage = Stage::kTruncated;
         o.batch_size = 16;
         o.consistency.boundary_prob = 0.05;
       },
       "--boundary_prob: 0.05 of --batch_size 16 places no image at t' (need boundary_prob x batch_size >= 1, or 0 "
       "for no boundary loss)"},
      {[&](TrainOptions& o) { o.w_boundary = nan; }, "--w_boundary: must be 0 or more and finite, got nan"},
      {[](TrainOptions& o) { o.transition_t = -1; }, "--transition_t: must be positive and finite, got -1"},
  };
  for (const auto& [change, message] : cases) {
    TrainOptions o;
    change(o);
    const absl::Status s = CheckTrainOptions(o);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << message;
    EXPECT_EQ(s.message(), message);
  }
  TrainOptions ok;  // the ends of the ranges that are allowed
  ok.beta1 = ok.beta2 = ok.ema_beta = ok.consistency.boundary_prob = 0;
  ok.ratio_limit = kMaxRatioLimit;
  ok.start_stage = kMaxStartStage;
  ok.grad_clip = inf;
  EXPECT_TRUE(CheckTrainOptions(ok).ok()) << CheckTrainOptions(ok);
}

// A full disk while the checkpoint is written (here the temporary file is
// /dev/full): one error naming the file, no temporary file left, the
// previous checkpoint intact. LibTorch's own writer aborted the process here.
TEST_F(TrainerTest, AFailedCheckpointWriteLeavesThePreviousOne) {
  if (!std::filesystem::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  const Data data = FashionImages(20);
  TrainOptions o;
  o.stage = Stage::kDiffusion;
  o.batch_size = 2;
  auto trainer = *Trainer::Create(o, TinyNet(0), nullptr, data.images, data.labels);
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("tcm_full_disk_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "checkpoint.pt").string();
  ASSERT_TRUE(trainer->SaveCheckpoint(path).ok());
  const auto before = std::filesystem::file_size(path);
  trainer->Step();
  std::filesystem::create_symlink("/dev/full", path + ".tmp");
  const absl::Status s = trainer->SaveCheckpoint(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(s.message(), path + ": writing the checkpoint failed: No space left on device");
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::symlink_status(path + ".tmp")));
  auto resumed = *Trainer::Create(o, TinyNet(1), nullptr, data.images, data.labels);
  EXPECT_EQ(std::filesystem::file_size(path), before);
  EXPECT_TRUE(resumed->LoadCheckpoint(path).ok());
  EXPECT_EQ(resumed->step(), 0);
  std::filesystem::remove_all(dir);
}

// A damaged checkpoint is one line naming the file, never resumed from.
TEST_F(TrainerTest, DamagedCheckpointsAreRefusedInOneLine) {
  const Data data = FashionImages(20);
  TrainOptions o;
  o.stage = Stage::kConsistency;
  o.batch_size = 2;
  o.ema_type = "power";
  o.ema_gamma_candidates = {3.0};
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("tcm_damaged_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "checkpoint.pt").string();
  const auto refusal = [&](const std::string& file) {
    auto trainer = *Trainer::Create(o, TinyNet(1), nullptr, data.images, data.labels);
    const absl::Status s = trainer->LoadCheckpoint(file);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(s.message().find('\n'), std::string::npos) << s.message();
    EXPECT_EQ(trainer->step(), 0);
    return std::string(s.message());
  };
  const std::string prefix = path + ": cannot resume from this checkpoint: ";
  {
    auto trainer = *Trainer::Create(o, TinyNet(0), nullptr, data.images, data.labels);
    trainer->Step();
    ASSERT_TRUE(trainer->SaveCheckpoint(path).ok());
  }
  std::string whole;
  {
    std::ifstream in(path, std::ios::binary);
    whole.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const auto write = [&](const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; };
  write("");
  EXPECT_EQ(refusal(path).rfind(prefix, 0), 0u) << refusal(path);
  write(whole.substr(0, whole.size() / 2));
  EXPECT_EQ(refusal(path).rfind(prefix, 0), 0u);
  write(whole.substr(0, whole.size() - 30));  // the zip's end record cut off
  EXPECT_EQ(refusal(path).rfind(prefix, 0), 0u);
  // A byte of a tensor's record changed, the zip's CRC-32 left as it was: LibTorch alone would load it.
  const size_t name = whole.find("/data/0");
  ASSERT_NE(name, std::string::npos);
  const size_t header = whole.rfind("PK\x03\x04", name);  // the record's local header
  const auto field = [&](size_t at) { return size_t(uint8_t(whole[at])) | size_t(uint8_t(whole[at + 1])) << 8; };
  std::string damaged = whole;
  damaged[header + 30 + field(header + 26) + field(header + 28)] ^= 1;
  write(damaged);
  EXPECT_EQ(refusal(path).rfind(prefix + "record ", 0), 0u) << refusal(path);
  EXPECT_NE(refusal(path).find("/data/0 is damaged (its CRC-32 is "), std::string::npos) << refusal(path);
  // NaN or infinity in the weights or an EMA: named.
  for (const auto& [which, key] : {std::pair<std::string, std::string>{"net/", "model.out_gain"},
                                   {"ema/", "model.out_gain"},
                                   {"ema1/", "model.out_gain"}}) {
    auto trainer = *Trainer::Create(o, TinyNet(0), nullptr, data.images, data.labels);
    trainer->Step();
    torch::NoGradGuard no_grad;
    Denoiser& net = which == "net/" ? trainer->net() : which == "ema/" ? trainer->ema() : trainer->candidate_ema(0);
    net.StateDict().at(key).fill_(which == "ema/" ? INFINITY : NAN);
    ASSERT_TRUE(trainer->SaveCheckpoint(path).ok());
    EXPECT_EQ(refusal(path), prefix + "tensor " + which + key + " holds NaN or infinity");
  }
  // A step out of range: negative, or beyond any --steps.
  for (int64_t step : {int64_t(-1), kMaxSteps + 1}) {
    torch::serialize::OutputArchive archive;
    archive.write("stage", torch::tensor(int64_t(Stage::kConsistency)));
    archive.write("step", torch::tensor(step));
    archive.save_to(path);
    EXPECT_EQ(refusal(path), absl::StrCat(prefix, "its step ", step, " is outside [0, 1000000000000]"));
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tcm
