// Test helpers: the shared reference fixtures as ready objects.
#ifndef TCM_MODEL_TEST_FIXTURES_H_
#define TCM_MODEL_TEST_FIXTURES_H_

#include <string>

#include "model/denoiser.h"
#include "model/model_config.h"
#include "model/model_repository.h"

namespace tcm::testing {

inline const char* const kFixtureNames[] = {"edm2_img64_tiny", "ddpmpp_cifar_tiny", "ddpmpp_cond_tiny"};

inline std::string FixturePath(const std::string& name, const std::string& kind) {
  return std::string(TCM_FIXTURES_DIR) + "/" + name + "." + kind + ".safetensors";
}

// The fixture's weights and configuration as a ModelDirectory (not on disk).
inline ModelDirectory LoadFixtureModel(const std::string& name) {
  const std::string path = FixturePath(name, "weights");
  auto file = SafetensorsFile::Read(path);
  if (!file.ok()) throw std::runtime_error(std::string(file.status().message()));
  auto config = ModelConfigFromReferenceKwargs(file->metadata().at("config"));
  if (!config.ok()) throw std::runtime_error(std::string(config.status().message()));
  ModelDirectory model;
  model.name = name;
  model.path = path;
  model.config = *config;
  model.weights = ToTensors(*file);
  return model;
}

inline TensorMap LoadFixtureIo(const std::string& name) {
  auto file = SafetensorsFile::Read(FixturePath(name, "io"));
  if (!file.ok()) throw std::runtime_error(std::string(file.status().message()));
  return ToTensors(*file);
}

}  // namespace tcm::testing

#endif  // TCM_MODEL_TEST_FIXTURES_H_
