// libFuzzer target: an Open Inference Protocol ModelInferRequest from
// serialized bytes, as the gRPC form receives it (infer_round_trip.h).
#include <cstddef>
#include <cstdint>

#include "fuzz/infer_round_trip.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  inference::ModelInferRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  tcm::fuzzing::CheckInferRequest(request);
  return 0;
}
