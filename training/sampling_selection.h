// Choosing a consistency model's sampling settings on images held out of
// training, never on the test set: which EMA of the weights to export (scored
// at 1 step) and the second step's noise level mid_t (scored at 2 steps).
// Each candidate is sampled and scored by the evaluation classifier (accuracy,
// and FD against the held-out images' features). The EMA of lowest FD wins; a
// mid_t must also make the second step worth its cost (ChooseMidT).
#ifndef TCM_TRAINING_SAMPLING_SELECTION_H_
#define TCM_TRAINING_SAMPLING_SELECTION_H_

#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/model_repository.h"
#include "training/classifier.h"
#include "training/evaluation.h"
#include "training/frechet.h"

namespace tcm {

struct StepScore {
  double accuracy = 0;  // class accuracy
  double fd = 0;        // against the held-out images
};

// `model` (a Fashion-MNIST model directory) sampled at 1 step, run in `dtype`,
// channels-last, drawing plan.num images, and scored against `held_out`.
absl::StatusOr<StepScore> ScoreOneStep(const ModelDirectory& model, torch::ScalarType dtype, const SamplingPlan& plan,
                                       FashionClassifier& classifier, const FeatureStatistics& held_out,
                                       const ProgressFn& progress);

struct MidTScore {
  double mid_t = 0;
  double accuracy = 0;  // class accuracy at 2 steps
  double fd = 0;        // against the held-out images
};

struct MidTChoice {
  size_t index = 0;             // into the scores
  bool beats_one_step = false;  // whether that candidate beats 1 step on both measures
};

// Whether `two_steps` beats `one_step` on both measures: class accuracy at
// least as high, FD lower.
bool BeatsOneStep(const StepScore& one_step, const MidTScore& two_steps);

// The rule of SelectMidT: of the candidates that beat `one_step` on both
// measures (BeatsOneStep), the one of lowest FD; when
// none does, the lowest FD of all. The first of equals wins. `scores` must not
// be empty.
MidTChoice ChooseMidT(const StepScore& one_step, const std::vector<MidTScore>& scores);

struct MidTSelection {
  double mid_t = 0;               // the chosen candidate (ChooseMidT)
  bool beats_one_step = false;    // it beats 1 step on both measures
  StepScore one_step;             // the model at 1 step
  std::vector<MidTScore> scores;  // one per candidate, in the order given
};

// Scores `model` (a Fashion-MNIST model directory) at 1 step and at 2 steps
// with every candidate of `candidates` (each in (0, t_max), else an
// InvalidArgument error naming `flag`) as mid_t, run in `dtype`,
// channels-last, drawing plan.num images each, and chooses by ChooseMidT.
// `one_step`, when given, is the model's 1-step score already measured so
// (SelectEmaProfile's for the chosen EMA), and is not measured again.
absl::StatusOr<MidTSelection> SelectMidT(const ModelDirectory& model, const std::vector<double>& candidates,
                                         const std::string& flag, torch::ScalarType dtype, const SamplingPlan& plan,
                                         FashionClassifier& classifier, const FeatureStatistics& held_out,
                                         const ProgressFn& progress,
                                         const std::optional<StepScore>& one_step = std::nullopt);

struct EmaScore {
  double gamma = 0;
  double accuracy = 0;  // class accuracy at 1 step
  double fd = 0;        // against the held-out images
};

struct EmaSelection {
  size_t chosen = 0;             // index into `scores` of the lowest FD (the first of equals)
  std::vector<EmaScore> scores;  // one per model, in the order given
};

// Scores `models[i]` (the same network's EMA of power gamma `gammas[i]`, each
// a Fashion-MNIST model directory) at 1 step, run in `dtype`, channels-last,
// drawing plan.num images each.
absl::StatusOr<EmaSelection> SelectEmaProfile(const std::vector<ModelDirectory>& models,
                                              const std::vector<double>& gammas, torch::ScalarType dtype,
                                              const SamplingPlan& plan, FashionClassifier& classifier,
                                              const FeatureStatistics& held_out, const ProgressFn& progress);

}  // namespace tcm

#endif  // TCM_TRAINING_SAMPLING_SELECTION_H_
