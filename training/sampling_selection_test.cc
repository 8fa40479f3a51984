#include "training/sampling_selection.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "model/denoiser.h"
#include "model/model_config.h"

namespace tcm {
namespace {

// A tiny Fashion-MNIST-shaped network with seeded random weights.
ModelDirectory TinyModel() {
  auto config = ParseModelConfigText(
      "architecture: \"EDM2UNet\" img_resolution: 32 img_channels: 1 num_classes: 10 "
      "edm2 { model_channels: 8 channel_mult: [1, 2] num_blocks: 1 attn_resolutions: [] }",
      "tiny");
  EXPECT_TRUE(config.ok()) << config.status();
  torch::manual_seed(11);
  auto net = Denoiser::Create(*config);
  EXPECT_TRUE(net.ok()) << net.status();
  ModelDirectory model;
  model.config = *config;
  for (const auto& [key, value] : (*net)->StateDict()) model.weights.emplace(key, value.detach().clone());
  return model;
}

struct Scoring {
  std::shared_ptr<FashionClassifier> net;
  FashionClassifier& classifier;
  FeatureStatistics held_out;
  SamplingPlan plan;
  Scoring() : net((torch::manual_seed(5), std::make_shared<FashionClassifier>())), classifier(*net) {
    classifier.eval();
    held_out = ComputeFeatureStatistics(torch::randn({40, kClassifierFeatures}));
    plan.num = 12;
    plan.batch_size = 5;
    plan.seed = 3;
  }

  // `model` sampled at `steps` and scored as tcm-eval would, outside the selection code.
  StepResult ScoreDirectly(const ModelDirectory& model, int steps) {
    auto replica = BuildReplica(model);
    EXPECT_TRUE(replica.ok()) << replica.status();
    (*replica)->SetCompute(torch::kFloat32, /*channels_last=*/true);
    (*replica)->PrepareForInference();
    return EvaluateSampler(ConsistencySampler(**replica), steps, "model", plan, classifier, held_out, {});
  }
};

TEST(MidTSelectionTest, ScoresOneStepAndEachCandidateAsTcmEvalWouldAndChoosesByTheRule) {
  const ModelDirectory model = TinyModel();
  Scoring s;
  const std::vector<double> candidates = {0.5, 5, 20};
  absl::StatusOr<MidTSelection> selection =
      SelectMidT(model, candidates, "--mid_t_candidates", torch::kFloat32, s.plan, s.classifier, s.held_out, {});
  ASSERT_TRUE(selection.ok()) << selection.status();
  ASSERT_EQ(selection->scores.size(), candidates.size());
  for (size_t i = 0; i < candidates.size(); ++i) {
    const MidTScore& score = selection->scores[i];
    EXPECT_DOUBLE_EQ(score.mid_t, candidates[i]);
    // The same model directory with that mid_t, sampled and scored directly.
    ModelDirectory direct = model;
    direct.config.set_mid_t(float(candidates[i]));
    const StepResult expected = s.ScoreDirectly(direct, 2);
    EXPECT_DOUBLE_EQ(score.fd, expected.fd) << candidates[i];
    EXPECT_DOUBLE_EQ(score.accuracy, expected.accuracy) << candidates[i];
  }
  EXPECT_NE(selection->scores[0].fd, selection->scores[2].fd) << "the candidates sample different images";
  // The 1-step score is the model's own, and the choice follows ChooseMidT.
  const StepResult one_step = s.ScoreDirectly(model, 1);
  EXPECT_DOUBLE_EQ(selection->one_step.fd, one_step.fd);
  EXPECT_DOUBLE_EQ(selection->one_step.accuracy, one_step.accuracy);
  const MidTChoice choice = ChooseMidT(selection->one_step, selection->scores);
  EXPECT_DOUBLE_EQ(selection->mid_t, selection->scores[choice.index].mid_t);
  EXPECT_EQ(selection->beats_one_step, choice.beats_one_step);

  // A 1-step score already measured is taken as given, not measured again.
  selection = SelectMidT(model, candidates, "--mid_t_candidates", torch::kFloat32, s.plan, s.classifier, s.held_out, {},
                         StepScore{1.0, 0.0});
  ASSERT_TRUE(selection.ok()) << selection.status();
  EXPECT_DOUBLE_EQ(selection->one_step.accuracy, 1.0);
  EXPECT_DOUBLE_EQ(selection->one_step.fd, 0.0);
  EXPECT_FALSE(selection->beats_one_step) << "no FD is below 0";
}

// A second step must beat the first on both measures to be chosen for its FD.
TEST(MidTSelectionTest, ChoosesTheLowestFdOfTheCandidatesThatBeatOneStepOnBothMeasures) {
  const std::vector<MidTScore> scores = {
      {0.821, 0.910, 10.0},  // the lowest FD, but less accurate than 1 step
      {2, 0.925, 12.0},      // beats 1 step
      {10, 0.930, 11.0},     // beats 1 step, lower FD: chosen
      {20, 0.950, 35.0},     // more accurate, FD worse than 1 step
  };
  MidTChoice choice = ChooseMidT({0.920, 30.0}, scores);
  EXPECT_EQ(choice.index, 2u);
  EXPECT_TRUE(choice.beats_one_step);
  // Accuracy equal to 1 step's counts as beating it; FD must be lower.
  choice = ChooseMidT({0.930, 12.0}, scores);
  EXPECT_EQ(choice.index, 2u);
  EXPECT_TRUE(choice.beats_one_step);
  choice = ChooseMidT({0.930, 11.0}, scores);
  EXPECT_FALSE(choice.beats_one_step);
  EXPECT_EQ(choice.index, 0u) << "none beats 1 step: the lowest FD of all";
  // The first of equals wins, among the beaters and among all.
  const std::vector<MidTScore> ties = {{1, 0.95, 20.0}, {2, 0.95, 20.0}, {3, 0.80, 5.0}, {4, 0.80, 5.0}};
  EXPECT_EQ(ChooseMidT({0.90, 30.0}, ties).index, 0u);
  EXPECT_EQ(ChooseMidT({0.99, 30.0}, ties).index, 2u);
}

TEST(MidTSelectionTest, RefusesCandidatesOutsideTheNoiseRangeNamingTheFlag) {
  const ModelDirectory model = TinyModel();
  Scoring s;
  for (const std::vector<double>& bad : {std::vector<double>{}, {0.0}, {2, 80}, {-1}}) {
    absl::StatusOr<MidTSelection> selection =
        SelectMidT(model, bad, "--mid_t_candidates", torch::kFloat32, s.plan, s.classifier, s.held_out, {});
    ASSERT_FALSE(selection.ok());
    EXPECT_EQ(selection.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(std::string(selection.status().message()).rfind("--mid_t_candidates: ", 0), 0u)
        << selection.status().message();
  }
}

// The EMA choice scores each model at 1 step as tcm-eval would and picks the
// lowest FD. The two models differ by the output gain (zero as initialised).
TEST(EmaSelectionTest, ScoresEachModelAtOneStepAndPicksTheLowestFd) {
  ModelDirectory a = TinyModel(), b = TinyModel();
  ASSERT_TRUE(b.weights.count("model.out_gain"));
  b.weights["model.out_gain"] = torch::ones_like(b.weights["model.out_gain"]);
  Scoring s;
  absl::StatusOr<EmaSelection> selection =
      SelectEmaProfile({a, b}, {16.97, 6.94}, torch::kFloat32, s.plan, s.classifier, s.held_out, {});
  ASSERT_TRUE(selection.ok()) << selection.status();
  ASSERT_EQ(selection->scores.size(), 2u);
  const ModelDirectory* models[] = {&a, &b};
  for (size_t i = 0; i < 2; ++i) {
    const StepResult expected = s.ScoreDirectly(*models[i], 1);
    EXPECT_DOUBLE_EQ(selection->scores[i].fd, expected.fd) << i;
    EXPECT_DOUBLE_EQ(selection->scores[i].accuracy, expected.accuracy) << i;
  }
  EXPECT_DOUBLE_EQ(selection->scores[0].gamma, 16.97);
  EXPECT_DOUBLE_EQ(selection->scores[1].gamma, 6.94);
  ASSERT_NE(selection->scores[0].fd, selection->scores[1].fd) << "the two models sample different images";
  EXPECT_EQ(selection->chosen, selection->scores[0].fd < selection->scores[1].fd ? 0u : 1u);
}

TEST(EmaSelectionTest, RefusesAMismatchOfModelsAndGammas) {
  Scoring s;
  absl::StatusOr<EmaSelection> selection =
      SelectEmaProfile({TinyModel()}, {1.0, 2.0}, torch::kFloat32, s.plan, s.classifier, s.held_out, {});
  ASSERT_FALSE(selection.ok());
  EXPECT_EQ(selection.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tcm
