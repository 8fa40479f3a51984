// How a TCM model looks through the Open Inference Protocol (KServe v2):
//   input  class_label  INT64 [N]           one class per image (conditional models only)
//   output image        UINT8 [N, H, W, C]  raw pixels, row-major
//   request parameters  steps (1 or 2; absent = the model's default),
//                       seed (absent = the server's choice, returned as a response parameter),
//                       num_images (unconditional models only; absent = 1),
//                       priority (1 = highest; absent = the model's default level)
// The mapping applies tcm.v1's rules (request_validation.h) to the same
// fields, so a request means the same on either front end. Torch-free.
#ifndef TCM_SERVER_INFERENCE_MAPPING_H_
#define TCM_SERVER_INFERENCE_MAPPING_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/grpc_predict_v2.pb.h"
#include "server/request_state.h"
#include "server/request_validation.h"
#include "server/served_model.h"

namespace tcm {

inline constexpr char kInferenceModelVersion[] = "1";  // every model has one version
inline constexpr char kInferencePlatform[] = "tcm_libtorch";
inline constexpr char kClassLabelInput[] = "class_label";
inline constexpr char kImageOutput[] = "image";

// The model named `name` ("" = models[default_model]) at `version` ("" or
// "1"), or NOT_FOUND naming the field (`name_field`, `version_field`) and what is served.
absl::StatusOr<const ServedModel*> FindInferenceModel(const std::vector<ServedModel>& models, int default_model,
                                                      const std::string& name, const std::string& version,
                                                      const char* name_field = "name",
                                                      const char* version_field = "version");

// The call `request` asks for, as a spec with raw images. `default_model`
// indexes `models` (for an empty model_name); `fresh_seed` is used when the
// request has no seed. Unknown model or version: NOT_FOUND; anything else
// wrong: INVALID_ARGUMENT naming the tensor or parameter.
absl::StatusOr<GenerationSpec> SpecFromInferRequest(const inference::ModelInferRequest& request,
                                                    const std::vector<ServedModel>& models, int default_model,
                                                    const ValidationLimits& limits, uint64_t fresh_seed);

// The response to `request` from its finished images (raw, one per index of
// `spec`, in any order): the `image` output in raw_output_contents, and the
// seed and steps used as response parameters. Fails when an image is missing
// or its size disagrees with the others.
absl::StatusOr<inference::ModelInferResponse> InferResponseFromImages(const inference::ModelInferRequest& request,
                                                                      const GenerationSpec& spec,
                                                                      const std::vector<v1::Image>& images);

// The metadata of `model`: its input (conditional models) and output tensors.
inference::ModelMetadataResponse ModelMetadataOf(const ServedModel& model);

}  // namespace tcm

#endif  // TCM_SERVER_INFERENCE_MAPPING_H_
