#include "model/tensor_io.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"

namespace tcm {
namespace {

torch::ScalarType ToScalarType(DType dtype) {
  switch (dtype) {
    case DType::kBool:
      return torch::kBool;
    case DType::kU8:
      return torch::kUInt8;
    case DType::kI8:
      return torch::kInt8;
    case DType::kI16:
      return torch::kInt16;
    case DType::kI32:
      return torch::kInt32;
    case DType::kI64:
      return torch::kInt64;
    case DType::kF16:
      return torch::kFloat16;
    case DType::kBF16:
      return torch::kBFloat16;
    case DType::kF32:
      return torch::kFloat32;
    case DType::kF64:
      return torch::kFloat64;
  }
  return torch::kFloat32;
}

absl::StatusOr<DType> FromScalarType(torch::ScalarType type) {
  for (DType d : {DType::kBool, DType::kU8, DType::kI8, DType::kI16, DType::kI32, DType::kI64, DType::kF16,
                  DType::kBF16, DType::kF32, DType::kF64}) {
    if (ToScalarType(d) == type) return d;
  }
  return absl::InvalidArgumentError(absl::StrCat("no safetensors dtype for ", c10::toString(type)));
}

}  // namespace

torch::Tensor ToTensor(const TensorEntry& entry) {
  torch::Tensor out = torch::empty(entry.shape, torch::TensorOptions().dtype(ToScalarType(entry.dtype)));
  std::memcpy(out.data_ptr(), entry.bytes.data(), entry.bytes.size());
  return out;
}

TensorMap ToTensors(const SafetensorsFile& file) {
  TensorMap out;
  for (const auto& entry : file.tensors()) out.emplace(entry.name, ToTensor(entry));
  return out;
}

absl::Status WriteTensors(const std::string& path, const TensorMap& tensors,
                          const std::map<std::string, std::string>& metadata) {
  std::vector<torch::Tensor> keep_alive;
  std::vector<TensorEntry> entries;
  for (const auto& [name, tensor] : tensors) {
    auto dtype = FromScalarType(tensor.scalar_type());
    if (!dtype.ok()) return absl::InvalidArgumentError(absl::StrCat(name, ": ", dtype.status().message()));
    torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
    keep_alive.push_back(t);
    TensorEntry e;
    e.name = name;
    e.dtype = *dtype;
    e.shape = t.sizes().vec();
    e.bytes = absl::string_view(static_cast<const char*>(t.data_ptr()), t.nbytes());
    entries.push_back(std::move(e));
  }
  return WriteSafetensors(path, entries, metadata);
}

}  // namespace tcm
