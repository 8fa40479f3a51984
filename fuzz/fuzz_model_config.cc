// libFuzzer target: a config.pbtxt (protobuf text format) read and completed.
// A config is either accepted, and then within ConfigLimits and stable when
// completed again, or refused with a one-line error naming the source.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "model/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = tcm::ParseModelConfigText(text, "fuzz.pbtxt");
  if (!config.ok()) {
    if (config.status().message().find("fuzz.pbtxt") != 0) std::abort();
    return 0;
  }
  if (config->img_resolution() > tcm::ConfigLimits::kMaxResolution ||
      config->num_classes() > tcm::ConfigLimits::kMaxClasses || config->default_steps() < 1 ||
      config->default_steps() > 2)
    std::abort();
  auto again = tcm::CompleteModelConfig(*config);
  if (!again.ok() || again->SerializeAsString() != config->SerializeAsString()) std::abort();
  return 0;
}
