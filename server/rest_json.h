// The Open Inference Protocol's REST form (KServe v2 JSON) as translations to
// and from its gRPC messages, so that REST calls take the gRPC path's
// mapping (inference_mapping.h) unchanged. Torch-free, pure functions.
//   request:  {"id": "...", "parameters": {"steps": 2, "seed": 7},
//              "inputs": [{"name": "class_label", "datatype": "INT64", "shape": [2], "data": [3, 3]}],
//              "outputs": [{"name": "image"}]}
//   response: {"model_name": ..., "model_version": "1", "id": ..., "parameters": {"seed": 7, "steps": 2},
//              "outputs": [{"name": "image", "datatype": "UINT8", "shape": [N, H, W, C], "data": [...]}]}
#ifndef TCM_SERVER_REST_JSON_H_
#define TCM_SERVER_REST_JSON_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "inference/grpc_predict_v2.pb.h"

namespace tcm {

// JSON nested deeper than this is refused before it is parsed.
inline constexpr int kMaxJsonDepth = 32;

// The request `body` of POST /v2/models/{model}[/versions/{version}]/infer.
// INVALID_ARGUMENT naming what is wrong ("body: ...", "inputs[0].data: ...").
absl::StatusOr<inference::ModelInferRequest> InferRequestFromJson(const std::string& model, const std::string& version,
                                                                  const std::string& body);

// The JSON body of a ModelInfer answer: raw_output_contents become `data` arrays.
std::string InferResponseToJson(const inference::ModelInferResponse& response);

std::string ModelMetadataToJson(const inference::ModelMetadataResponse& metadata);
std::string ServerMetadataToJson(const inference::ServerMetadataResponse& metadata);

// The HTTP status for a call's status: 400 bad request, 404 unknown model, 429
// queue full, 499 cancelled (the caller left), 503 draining, 504 deadline,
// 500 otherwise.
int HttpStatusOf(absl::StatusCode code);

}  // namespace tcm

#endif  // TCM_SERVER_REST_JSON_H_
