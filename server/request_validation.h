// Turns a GenerateRequest into a GenerationSpec, or an error that names the
// field and the allowed values. Torch-free.
#ifndef TCM_SERVER_REQUEST_VALIDATION_H_
#define TCM_SERVER_REQUEST_VALIDATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/request_state.h"
#include "server/served_model.h"
#include "tcm/v1/tcm_service.pb.h"

namespace tcm {

struct ValidationLimits {
  unsigned max_images_per_request = 64;
};

// `default_model` indexes `models` (-1: none); `fresh_seed` is used when the
// request has no seed. Unknown model: NOT_FOUND; anything else wrong:
// INVALID_ARGUMENT. The spec's model is the found model's slot.
absl::StatusOr<GenerationSpec> ValidateRequest(const v1::GenerateRequest& request,
                                               const std::vector<ServedModel>& models, int default_model,
                                               const ValidationLimits& limits, uint64_t fresh_seed);

// The class of image `index` of a request seeded `seed` that named no class.
int64_t RandomClassLabel(uint64_t seed, unsigned index, unsigned num_classes);

}  // namespace tcm

#endif  // TCM_SERVER_REQUEST_VALIDATION_H_
