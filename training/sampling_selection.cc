#include "training/sampling_selection.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace tcm {
namespace {

// `model` sampled at `steps` and scored as tcm-eval scores it.
absl::StatusOr<StepResult> Score(const ModelDirectory& model, int steps, torch::ScalarType dtype,
                                 const SamplingPlan& plan, FashionClassifier& classifier,
                                 const FeatureStatistics& held_out, const ProgressFn& progress) {
  TCM_ASSIGN_OR_RETURN(auto replica, BuildReplica(model));
  replica->SetCompute(dtype, /*channels_last=*/true);
  replica->PrepareForInference();
  replica->SetRowShards(true);
  return EvaluateSampler(ConsistencySampler(*replica), steps, "model", plan, classifier, held_out, progress);
}

}  // namespace

absl::StatusOr<StepScore> ScoreOneStep(const ModelDirectory& model, torch::ScalarType dtype, const SamplingPlan& plan,
                                       FashionClassifier& classifier, const FeatureStatistics& held_out,
                                       const ProgressFn& progress) {
  TCM_ASSIGN_OR_RETURN(const StepResult result, Score(model, /*steps=*/1, dtype, plan, classifier, held_out, progress));
  return StepScore{result.accuracy, result.fd};
}

absl::StatusOr<MidTSelection> SelectMidT(const ModelDirectory& model, const std::vector<double>& candidates,
                                         const std::string& flag, torch::ScalarType dtype, const SamplingPlan& plan,
                                         FashionClassifier& classifier, const FeatureStatistics& held_out,
                                         const ProgressFn& progress, const std::optional<StepScore>& one_step) {
  if (candidates.empty()) return absl::InvalidArgumentError(absl::StrCat(flag, ": give at least one value"));
  const double t_max = model.config.t_max();
  for (double mid_t : candidates)
    if (!(mid_t > 0 && mid_t < t_max))
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": each value must be in (0, t_max = ", t_max, "), got ", mid_t));
  MidTSelection selection;
  if (one_step) {
    selection.one_step = *one_step;
  } else {
    TCM_ASSIGN_OR_RETURN(selection.one_step, ScoreOneStep(model, dtype, plan, classifier, held_out, progress));
  }
  for (double mid_t : candidates) {
    ModelDirectory candidate = model;
    candidate.config.set_mid_t(float(mid_t));
    TCM_ASSIGN_OR_RETURN(const StepResult result,
                         Score(candidate, /*steps=*/2, dtype, plan, classifier, held_out, progress));
    selection.scores.push_back({mid_t, result.accuracy, result.fd});
  }
  const MidTChoice choice = ChooseMidT(selection.one_step, selection.scores);
  selection.mid_t = selection.scores[choice.index].mid_t;
  selection.beats_one_step = choice.beats_one_step;
  return selection;
}

bool BeatsOneStep(const StepScore& one_step, const MidTScore& two_steps) {
  return two_steps.accuracy >= one_step.accuracy && two_steps.fd < one_step.fd;
}

MidTChoice ChooseMidT(const StepScore& one_step, const std::vector<MidTScore>& scores) {
  MidTChoice choice;
  for (size_t i = 0; i < scores.size(); ++i) {
    const bool beats = BeatsOneStep(one_step, scores[i]);
    const bool better = beats ? !choice.beats_one_step || scores[i].fd < scores[choice.index].fd
                              : !choice.beats_one_step && scores[i].fd < scores[choice.index].fd;
    if (better) choice = {i, beats};
  }
  return choice;
}

absl::StatusOr<EmaSelection> SelectEmaProfile(const std::vector<ModelDirectory>& models,
                                              const std::vector<double>& gammas, torch::ScalarType dtype,
                                              const SamplingPlan& plan, FashionClassifier& classifier,
                                              const FeatureStatistics& held_out, const ProgressFn& progress) {
  if (models.empty() || models.size() != gammas.size())
    return absl::InvalidArgumentError(
        absl::StrCat("choosing the EMA: ", models.size(), " models for ", gammas.size(), " gammas"));
  EmaSelection selection;
  for (size_t i = 0; i < models.size(); ++i) {
    TCM_ASSIGN_OR_RETURN(const StepScore score, ScoreOneStep(models[i], dtype, plan, classifier, held_out, progress));
    selection.scores.push_back({gammas[i], score.accuracy, score.fd});
    if (score.fd < selection.scores[selection.chosen].fd) selection.chosen = i;
  }
  return selection;
}

}  // namespace tcm
