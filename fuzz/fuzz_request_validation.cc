// libFuzzer target: a GenerateRequest from serialized bytes, validated against
// a conditional and an unconditional model (spec_invariants.h).
#include <cstddef>
#include <cstdint>

#include "fuzz/spec_invariants.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tcm::v1::GenerateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  auto spec = tcm::ValidateRequest(request, tcm::fuzzing::Models(), 0, tcm::fuzzing::Limits(), /*fresh_seed=*/7);
  if (!spec.ok()) {
    tcm::fuzzing::CheckRefusal(spec.status());
    return 0;
  }
  tcm::fuzzing::CheckSpec(*spec);
  return 0;
}
