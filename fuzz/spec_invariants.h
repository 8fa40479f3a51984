// What every fuzz target of request parsing checks, whatever the front door:
// a refused request is INVALID_ARGUMENT or NOT_FOUND with a "field: why"
// message; an accepted one's GenerationSpec keeps every promise the workers
// rely on. A broken promise aborts, which libFuzzer reports as a crash.
#ifndef TCM_FUZZ_SPEC_INVARIANTS_H_
#define TCM_FUZZ_SPEC_INVARIANTS_H_

#include <cstdint>
#include <cstdlib>
#include <vector>

#include "absl/status/status.h"
#include "server/request_state.h"
#include "server/request_validation.h"
#include "server/served_model.h"

namespace tcm::fuzzing {

// A conditional model with a queue limit of 16 images and an unconditional
// one, in slots 0 and 1 (a spec's model is its slot).
inline const std::vector<ServedModel>& Models() {
  static const std::vector<ServedModel> models = [] {
    ServedModel cond{"cond", 10, 1, 16};
    ServedModel uncond{"uncond", 0, 2, 0};
    for (ServedModel* m : {&cond, &uncond}) {
      m->resolution = 4;
      m->channels = 1;
    }
    return NumberSlots({cond, uncond});
  }();
  return models;
}

inline ValidationLimits Limits() {
  ValidationLimits limits;
  limits.max_images_per_request = 64;
  return limits;
}

inline void CheckRefusal(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kInvalidArgument && status.code() != absl::StatusCode::kNotFound) std::abort();
  if (status.message().find(": ") == absl::string_view::npos) std::abort();  // "field: why"
}

inline void CheckSpec(const GenerationSpec& spec) {
  if (spec.model < 0 || static_cast<size_t>(spec.model) >= Models().size()) std::abort();
  const ServedModel& model = Models()[spec.model];
  if (spec.model_name != model.name) std::abort();
  if (spec.steps != 1 && spec.steps != 2) std::abort();
  if (spec.num_images < 1 || spec.num_images > Limits().max_images_per_request) std::abort();
  if (model.max_images > 0 && spec.num_images > model.max_images) std::abort();
  if (spec.class_labels.size() != spec.num_images) std::abort();
  for (int64_t label : spec.class_labels) {
    if (model.num_classes == 0 ? label != -1 : (label < 0 || label >= model.num_classes)) std::abort();
  }
  if (!v1::ImageFormat_IsValid(spec.format)) std::abort();
}

}  // namespace tcm::fuzzing

#endif  // TCM_FUZZ_SPEC_INVARIANTS_H_
