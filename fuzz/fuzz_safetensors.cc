// libFuzzer target: the safetensors reader on arbitrary bytes. A file is
// either read (every tensor's bytes lie inside the file) or refused with a
// one-line error; nothing crashes or allocates what a header declares.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string contents(reinterpret_cast<const char*>(data), size);
  auto file = tcm::SafetensorsFile::Parse(contents, "fuzz.safetensors");
  if (!file.ok()) {
    if (file.status().message().find('\n') != absl::string_view::npos) std::abort();  // errors are one line
    return 0;
  }
  size_t total = 0;
  for (const auto& tensor : file->tensors()) {
    // The byte size from the shape, without wrapping: what a reader that
    // trusted a wrapped product would hand LibTorch.
    uint64_t expected = tcm::DTypeSize(tensor.dtype);
    for (int64_t dim : tensor.shape) {
      if (dim < 0 || __builtin_mul_overflow(expected, static_cast<uint64_t>(dim), &expected)) std::abort();
    }
    if (tensor.bytes.size() != expected) std::abort();
    total += tensor.bytes.size();
  }
  if (total > size) std::abort();  // tensors lie inside the file and do not overlap
  return 0;
}
