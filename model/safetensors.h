// Reading and writing the safetensors format: an 8-byte little-endian header
// length, a JSON header naming each tensor's dtype, shape and byte range, then
// the raw little-endian tensor data. Torch-free; see tensor_io.h for tensors.
//
// Every malformed input (truncated file, bad header, offsets out of range,
// unknown dtype, size mismatch) is reported as an error Status that names the
// file and the tensor; nothing here aborts. A header is refused when it is
// not JSON (with the parser's message and byte position), when a key appears
// twice in one of its objects (a tensor listed twice, say), and unless its
// tensors cover the data section exactly: back to back from byte 0 to the
// end of the file, no byte in two tensors, none in none (no gap, no trailing
// bytes).
#ifndef TCM_MODEL_SAFETENSORS_H_
#define TCM_MODEL_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tcm {

enum class DType { kBool, kU8, kI8, kI16, kI32, kI64, kF16, kBF16, kF32, kF64 };

// "F32", "I64", ... as spelled in safetensors headers.
absl::string_view DTypeName(DType dtype);
absl::StatusOr<DType> ParseDType(absl::string_view name);
size_t DTypeSize(DType dtype);

struct TensorEntry {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  absl::string_view bytes;  // view into the owning SafetensorsFile's buffer
  int64_t NumElements() const;
};

// An in-memory safetensors file. Movable; entries' byte views stay valid for
// the lifetime of the object (the buffer is heap-owned).
class SafetensorsFile {
 public:
  // Reads `path`, which must be a regular file, in order: the header length
  // (at most 100 MiB), the header, and only once the header is checked whole
  // (the tensors cover the rest of the file exactly) the data section.
  static absl::StatusOr<SafetensorsFile> Read(const std::string& path);
  // The same checks on bytes in memory. `source` names the data in error
  // messages (usually the path).
  static absl::StatusOr<SafetensorsFile> Parse(std::string contents, const std::string& source);

  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Tensors ordered by name.
  const std::vector<TensorEntry>& tensors() const { return tensors_; }
  const TensorEntry* Find(absl::string_view name) const;

 private:
  SafetensorsFile() = default;
  std::unique_ptr<std::string> buffer_;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorEntry> tensors_;
};

// Writes `tensors` (each entry's bytes must hold exactly its shape's data) and
// `metadata` to `path` atomically: a temporary file is renamed into place.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorEntry>& tensors,
                              const std::map<std::string, std::string>& metadata);

}  // namespace tcm

#endif  // TCM_MODEL_SAFETENSORS_H_
