// libFuzzer target: a GenerateRequest from serialized bytes, validated against
// a conditional and an unconditional model. An accepted request's spec keeps
// every promise the workers rely on; a refused one names the field.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "server/request_validation.h"

namespace {

const std::vector<tcm::ServedModel>& Models() {
  static const std::vector<tcm::ServedModel> models = {{"cond", 10, 1, 16}, {"uncond", 0, 2, 0}};
  return models;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tcm::v1::GenerateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  tcm::ValidationLimits limits;
  limits.max_images_per_request = 64;
  auto spec = tcm::ValidateRequest(request, Models(), 0, limits, /*fresh_seed=*/7);
  if (!spec.ok()) {
    const auto code = spec.status().code();
    if (code != absl::StatusCode::kInvalidArgument && code != absl::StatusCode::kNotFound) std::abort();
    if (spec.status().message().find(": ") == absl::string_view::npos) std::abort();  // "field: why"
    return 0;
  }
  const tcm::ServedModel& model = Models().at(spec->model);
  if (spec->steps != 1 && spec->steps != 2) std::abort();
  if (spec->num_images < 1 || spec->num_images > limits.max_images_per_request) std::abort();
  if (model.max_images > 0 && spec->num_images > model.max_images) std::abort();
  if (spec->class_labels.size() != spec->num_images) std::abort();
  for (int64_t label : spec->class_labels) {
    if (model.num_classes == 0 ? label != -1 : (label < 0 || label >= model.num_classes)) std::abort();
  }
  if (!tcm::v1::ImageFormat_IsValid(spec->format)) std::abort();
  return 0;
}
