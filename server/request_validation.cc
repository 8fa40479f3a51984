#include "server/request_validation.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "common/splitmix.h"

namespace tcm {

int64_t RandomClassLabel(uint64_t seed, unsigned index, unsigned num_classes) {
  // SplitMix64's output from the state (seed, index) mixed in, reduced to the
  // class range. (The state is taken one gamma back, as it always was.)
  const uint64_t state = seed ^ (kSplitMixGamma * (static_cast<uint64_t>(index) + 1)) ^ 0xc1a55c1a55ULL;
  return static_cast<int64_t>(SplitMix64(state - kSplitMixGamma) % num_classes);
}

unsigned MaxImagesPerCall(const ServedModel& model, const ValidationLimits& limits, bool* model_caps) {
  const bool caps = model.max_images > 0 && model.max_images < limits.max_images_per_request;
  if (model_caps != nullptr) *model_caps = caps;
  return caps ? model.max_images : limits.max_images_per_request;
}

absl::StatusOr<GenerationSpec> ValidateRequest(const v1::GenerateRequest& request,
                                               const std::vector<ServedModel>& models, int default_model,
                                               const ValidationLimits& limits, uint64_t fresh_seed) {
  GenerationSpec spec;
  int found = request.model().empty() ? default_model : -1;
  for (size_t i = 0; i < models.size() && found < 0 && !request.model().empty(); ++i)
    if (models[i].name == request.model()) found = static_cast<int>(i);
  if (found < 0 || found >= static_cast<int>(models.size())) {
    std::vector<std::string> names;
    for (const auto& m : models) names.push_back(m.name);
    const std::string available = absl::StrCat("(available: ", absl::StrJoin(names, ", "), ")");
    if (request.model().empty())
      return absl::NotFoundError(absl::StrCat("model: the default model is not served; name one ", available));
    return absl::NotFoundError(absl::StrCat("model: '", request.model(), "' is not served ", available));
  }
  const ServedModel& model = models[found];
  spec.model = model.slot;
  spec.model_name = model.name;
  spec.model_version = model.version;
  spec.cacheable = model.cacheable;

  spec.steps = request.steps() == 0 ? model.default_steps : request.steps();
  if (spec.steps != 1 && spec.steps != 2)
    return absl::InvalidArgumentError(absl::StrCat("steps: must be 1 or 2 (0 = the model's default, ",
                                                   model.default_steps, "), got ", request.steps()));

  spec.num_images = request.num_images() == 0 ? 1 : request.num_images();
  bool model_caps = false;
  const unsigned max_images = MaxImagesPerCall(model, limits, &model_caps);
  if (spec.num_images > max_images)
    return absl::InvalidArgumentError(absl::StrCat("num_images: must be at most ", max_images,
                                                   model_caps ? absl::StrCat(" for model '", model.name, "'") : "",
                                                   " (0 = 1), got ", request.num_images()));

  if (!v1::ImageFormat_IsValid(request.format()))
    return absl::InvalidArgumentError(
        absl::StrCat("format: must be IMAGE_FORMAT_PNG (0) or IMAGE_FORMAT_RAW (1), got ", request.format()));
  spec.format = request.format();
  spec.preview = request.preview();
  if (request.priority() > model.priority_levels)
    return absl::InvalidArgumentError(absl::StrCat("priority: must be 1 (highest) to ", model.priority_levels,
                                                   " for model '", model.name, "', or 0 (the model's default, ",
                                                   model.default_priority_level, "), got ", request.priority()));
  spec.priority = request.priority() == 0 ? model.default_priority_level : request.priority();
  spec.seed = request.has_seed() ? request.seed() : fresh_seed;
  spec.seeded = request.has_seed();

  if (request.has_class_label()) {
    if (model.num_classes == 0)
      return absl::InvalidArgumentError(
          absl::StrCat("class_label: model '", model.name, "' is unconditional; leave class_label unset"));
    if (request.class_label() < 0 || request.class_label() >= model.num_classes)
      return absl::InvalidArgumentError(absl::StrCat("class_label: must be in [0, ", model.num_classes, ") for model '",
                                                     model.name, "', got ", request.class_label()));
  }
  for (unsigned i = 0; i < spec.num_images; ++i) {
    if (model.num_classes == 0) {
      spec.class_labels.push_back(-1);
    } else if (request.has_class_label()) {
      spec.class_labels.push_back(request.class_label());
    } else {
      spec.class_labels.push_back(RandomClassLabel(spec.seed, i, model.num_classes));
    }
  }
  return spec;
}

absl::Status RestateField(const absl::Status& status, absl::string_view field, absl::string_view as) {
  absl::string_view message = status.message();
  if (!absl::ConsumePrefix(&message, absl::StrCat(field, ": "))) return status;
  return absl::Status(status.code(), absl::StrReplaceAll(absl::StrCat(as, message), {{" (0 = 1)", ""}}));
}

}  // namespace tcm
