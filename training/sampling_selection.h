// Choosing a consistency model's sampling settings on images held out of
// training, never on the test set: which EMA of the weights to export (scored
// at 1 step) and the second step's noise level mid_t (scored at 2 steps).
// Each candidate is sampled and scored by the evaluation classifier (accuracy,
// and FD against the held-out images' features); the lowest FD wins.
#ifndef TCM_TRAINING_SAMPLING_SELECTION_H_
#define TCM_TRAINING_SAMPLING_SELECTION_H_

#include <torch/torch.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/model_repository.h"
#include "training/classifier.h"
#include "training/evaluation.h"
#include "training/frechet.h"

namespace tcm {

struct MidTScore {
  double mid_t = 0;
  double accuracy = 0;  // class accuracy at 2 steps
  double fd = 0;        // against the held-out images
};

struct MidTSelection {
  double mid_t = 0;               // the candidate of lowest FD (the first of equals)
  std::vector<MidTScore> scores;  // one per candidate, in the order given
};

// Scores every candidate of `candidates` (each in (0, t_max), else an
// InvalidArgument error naming `flag`) on `model` (a Fashion-MNIST model
// directory) run in `dtype`, channels-last, drawing plan.num images each.
absl::StatusOr<MidTSelection> SelectMidT(const ModelDirectory& model, const std::vector<double>& candidates,
                                         const std::string& flag, torch::ScalarType dtype, const SamplingPlan& plan,
                                         FashionClassifier& classifier, const FeatureStatistics& held_out,
                                         const ProgressFn& progress);

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
