// Model descriptions for tests of the service layer, which serve them from a
// fake queue (no weights behind them). Header-only.
#ifndef TCM_SERVER_SERVED_MODEL_TEST_UTIL_H_
#define TCM_SERVER_SERVED_MODEL_TEST_UTIL_H_

#include <string>
#include <vector>

#include "server/served_model.h"

namespace tcm::testing {

// A class-conditional model `name` of ten classes (no class names), taking one
// step by default, of `side` x `side` images with `channels` channels.
inline ServedModel TenClassModel(const std::string& name, unsigned side, unsigned channels) {
  ServedModel model;
  model.name = name;
  model.num_classes = 10;
  model.default_steps = 1;
  model.resolution = side;
  model.channels = channels;
  return model;
}

// `model` renamed `name` and made unconditional (no classes, no class names).
inline ServedModel Unconditional(ServedModel model, const std::string& name) {
  model.name = name;
  model.num_classes = 0;
  model.class_names.clear();
  return model;
}

// Class names for a ten-class model: "zero" to "nine".
inline std::vector<std::string> DigitNames() {
  return {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"};
}

}  // namespace tcm::testing

#endif  // TCM_SERVER_SERVED_MODEL_TEST_UTIL_H_
