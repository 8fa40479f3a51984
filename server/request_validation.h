// Turns a GenerateRequest into a GenerationSpec, or an error that names the
// field and the allowed values. Torch-free.
#ifndef TCM_SERVER_REQUEST_VALIDATION_H_
#define TCM_SERVER_REQUEST_VALIDATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/request_state.h"
#include "server/served_model.h"
#include "tcm/v1/tcm_service.pb.h"

namespace tcm {

struct ValidationLimits {
  unsigned max_images_per_request = 64;
};

// The most images one call to `model` may ask for: --max_images_per_request,
// or the model's own max_images where that is smaller (then `model_caps`,
// when given, is set).
unsigned MaxImagesPerCall(const ServedModel& model, const ValidationLimits& limits, bool* model_caps = nullptr);

// `default_model` indexes `models` (-1: none); `fresh_seed` is used when the
// request has no seed. Unknown model: NOT_FOUND; anything else wrong:
// INVALID_ARGUMENT. The spec's model is the found model's slot.
absl::StatusOr<GenerationSpec> ValidateRequest(const v1::GenerateRequest& request,
                                               const std::vector<ServedModel>& models, int default_model,
                                               const ValidationLimits& limits, uint64_t fresh_seed);

// ValidateRequest's messages begin with the tcm.v1 field they concern
// ("num_images: must be at most 64 (0 = 1), got 65"). For a front door whose
// callers name that field otherwise: `status` with the prefix `field: `
// replaced by `as` ("query 'num': ") and tcm.v1's remark " (0 = 1)" dropped; a status about
// another field is returned as it is.
absl::Status RestateField(const absl::Status& status, absl::string_view field, absl::string_view as);

// The class of image `index` of a request seeded `seed` that named no class.
int64_t RandomClassLabel(uint64_t seed, unsigned index, unsigned num_classes);

}  // namespace tcm

#endif  // TCM_SERVER_REQUEST_VALIDATION_H_
