// One line from an exception LibTorch threw: c10::Error's message without the
// C++ stack trace it carries, or what() of any other exception; only the
// first line of either. For turning exceptions into absl::Status at the
// boundary where models are built, loaded and run.
#ifndef TCM_MODEL_TORCH_ERROR_H_
#define TCM_MODEL_TORCH_ERROR_H_

#include <exception>
#include <string>

namespace tcm {

std::string ExceptionMessage(const std::exception& e);

}  // namespace tcm

#endif  // TCM_MODEL_TORCH_ERROR_H_
