#include "training/mid_t_selection.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace tcm {

absl::StatusOr<MidTSelection> SelectMidT(const ModelDirectory& model, const std::vector<double>& candidates,
                                         const std::string& flag, torch::ScalarType dtype, const SamplingPlan& plan,
                                         FashionClassifier& classifier, const FeatureStatistics& held_out,
                                         const ProgressFn& progress) {
  if (candidates.empty()) return absl::InvalidArgumentError(absl::StrCat(flag, ": give at least one value"));
  const double t_max = model.config.t_max();
  for (double mid_t : candidates)
    if (!(mid_t > 0 && mid_t < t_max))
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": each value must be in (0, t_max = ", t_max, "), got ", mid_t));
  MidTSelection selection;
  for (double mid_t : candidates) {
    ModelDirectory candidate = model;
    candidate.config.set_mid_t(float(mid_t));
    TCM_ASSIGN_OR_RETURN(auto replica, BuildReplica(candidate));
    replica->SetCompute(dtype, /*channels_last=*/true);
    replica->PrepareForInference();
    const StepResult result =
        EvaluateSampler(ConsistencySampler(*replica), /*steps=*/2, "model", plan, classifier, held_out, progress);
    selection.scores.push_back({mid_t, result.accuracy, result.fd});
  }
  const MidTScore* best = &selection.scores[0];
  for (const MidTScore& s : selection.scores)
    if (s.fd < best->fd) best = &s;
  selection.mid_t = best->mid_t;
  return selection;
}

}  // namespace tcm
