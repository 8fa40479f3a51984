#include "model/torch_error.h"

#include <c10/util/Exception.h>

namespace tcm {

std::string ExceptionMessage(const std::exception& e) {
  const auto* torch_error = dynamic_cast<const c10::Error*>(&e);
  std::string message = torch_error != nullptr ? torch_error->what_without_backtrace() : e.what();
  if (const size_t newline = message.find('\n'); newline != std::string::npos) message.resize(newline);
  return message;
}

}  // namespace tcm
