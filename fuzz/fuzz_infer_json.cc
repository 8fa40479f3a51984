// libFuzzer target: the JSON body of POST /v2/models/cond/infer, as the REST
// form receives it: parsed (InferRequestFromJson, which may only refuse with
// INVALID_ARGUMENT naming what is wrong) and then mapped (infer_round_trip.h).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "fuzz/infer_round_trip.h"
#include "server/rest_json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  auto request = tcm::InferRequestFromJson("cond", "", body);
  if (!request.ok()) {
    if (request.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    if (request.status().message().find(": ") == absl::string_view::npos) std::abort();
    return 0;
  }
  tcm::fuzzing::CheckInferRequest(*request);
  return 0;
}
