// Bridges safetensors files and LibTorch tensors.
#ifndef TCM_MODEL_TENSOR_IO_H_
#define TCM_MODEL_TENSOR_IO_H_

#include <torch/types.h>

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "model/safetensors.h"

namespace tcm {

using TensorMap = std::map<std::string, torch::Tensor>;

// A CPU tensor holding a copy of `entry` (same dtype and shape).
torch::Tensor ToTensor(const TensorEntry& entry);

// All tensors of a parsed file, by name.
TensorMap ToTensors(const SafetensorsFile& file);

// Writes CPU-contiguous copies of `tensors` with `metadata`, atomically.
absl::Status WriteTensors(const std::string& path, const TensorMap& tensors,
                          const std::map<std::string, std::string>& metadata);

}  // namespace tcm

#endif  // TCM_MODEL_TENSOR_IO_H_
