// The Open Inference Protocol's side of the fuzz checks: a ModelInferRequest
// is mapped (SpecFromInferRequest); a refusal must name its tensor or
// parameter, an accepted spec keep the workers' promises, and the answer
// built from images of the spec's size must hold exactly N x H x W x C bytes.
#ifndef TCM_FUZZ_INFER_ROUND_TRIP_H_
#define TCM_FUZZ_INFER_ROUND_TRIP_H_

#include <cstdlib>
#include <string>
#include <vector>

#include "fuzz/spec_invariants.h"
#include "server/inference_mapping.h"

namespace tcm::fuzzing {

inline void CheckInferRequest(const inference::ModelInferRequest& request) {
  auto spec = SpecFromInferRequest(request, Models(), 0, Limits(), /*fresh_seed=*/7);
  if (!spec.ok()) {
    CheckRefusal(spec.status());
    return;
  }
  CheckSpec(*spec);
  const ServedModel& model = Models()[spec->model];
  const size_t image_bytes = size_t{model.resolution} * model.resolution * model.channels;
  std::vector<v1::Image> images(spec->num_images);
  for (unsigned i = 0; i < spec->num_images; ++i) {
    images[i].set_index(spec->num_images - 1 - i);  // any order
    images[i].set_width(model.resolution);
    images[i].set_height(model.resolution);
    images[i].set_channels(model.channels);
    images[i].set_format(v1::IMAGE_FORMAT_RAW);
    images[i].set_data(std::string(image_bytes, static_cast<char>(i)));
  }
  auto response = InferResponseFromImages(request, *spec, images);
  if (!response.ok()) std::abort();
  if (response->raw_output_contents_size() != 1) std::abort();
  if (response->raw_output_contents(0).size() != image_bytes * spec->num_images) std::abort();
}

}  // namespace tcm::fuzzing

#endif  // TCM_FUZZ_INFER_ROUND_TRIP_H_
