#include "model/model_repository.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/read_file.h"
#include "common/status_macros.h"
#include "common/utf8.h"
#include "common/write_file.h"
#include "google/protobuf/text_format.h"
#include "model/model_config.h"
#include "model/torch_error.h"
#include "nlohmann/json.hpp"

namespace tcm {
namespace fs = std::filesystem;

namespace {

// The largest labels.txt read (100,000 class names of 160 bytes each).
constexpr uint64_t kMaxLabelsFileBytes = 16 << 20;

absl::StatusOr<std::vector<std::string>> ReadLabels(const fs::path& path, uint32_t num_classes) {
  std::vector<std::string> labels;
  std::error_code ec;  // only a missing file is no labels; anything else there is read (and may be refused)
  if (fs::symlink_status(path, ec).type() == fs::file_type::not_found) return labels;
  TCM_ASSIGN_OR_RETURN(const std::string text, ReadRegularFile(path.string(), kMaxLabelsFileBytes));
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!IsPrintableUtf8(line))
      return absl::InvalidArgumentError(
          absl::StrCat(path.string(), ": line ", labels.size() + 1, ": must be UTF-8 text without control characters"));
    labels.push_back(line);
  }
  while (!labels.empty() && labels.back().empty()) labels.pop_back();
  if (labels.size() != num_classes)
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": has ", labels.size(),
                                                   " class names but the model has num_classes = ", num_classes));
  return labels;
}

}  // namespace

std::string NetworkDifference(const v1::ModelConfig& a, const std::string& a_name, const v1::ModelConfig& b,
                              const std::string& b_name) {
  nlohmann::json kwargs_a = nlohmann::json::parse(ReferenceKwargsFromModelConfig(a));
  nlohmann::json kwargs_b = nlohmann::json::parse(ReferenceKwargsFromModelConfig(b));
  kwargs_a.erase("dropout");
  kwargs_b.erase("dropout");
  const auto value_of = [](const nlohmann::json& kwargs, const std::string& key) {
    const auto it = kwargs.find(key);
    return it == kwargs.end() ? std::string("none") : it->dump();
  };
  for (const nlohmann::json* kwargs : {&kwargs_a, &kwargs_b})
    for (const auto& [key, value] : kwargs->items())
      if (value_of(kwargs_a, key) != value_of(kwargs_b, key))
        return absl::StrCat(key, ": ", a_name, "'s ", value_of(kwargs_a, key), ", ", b_name, "'s ",
                            value_of(kwargs_b, key));
  return "";
}

absl::StatusOr<ModelDirectory> ComposeTruncated(const ModelDirectory& above, const ModelDirectory& below,
                                                double transition_t) {
  if (above.config.has_transition_t() || below.config.has_transition_t())
    return absl::InvalidArgumentError("composing: both model directories must hold a single network");
  if (const std::string difference = NetworkDifference(above.config, above.path, below.config, below.path);
      !difference.empty())
    return absl::InvalidArgumentError(absl::StrCat(
        "composing: ", below.path, " has another network configuration than ", above.path, " (", difference, ")"));
  ModelDirectory composed = above;
  composed.config.set_transition_t(static_cast<float>(transition_t));
  TCM_ASSIGN_OR_RETURN(composed.config, CompleteModelConfig(composed.config));
  for (const auto& [key, value] : below.weights) composed.weights.emplace("below_transition." + key, value);
  TCM_ASSIGN_OR_RETURN(auto probe, Denoiser::Create(composed.config));
  TCM_RETURN_IF_ERROR(probe->LoadStateDict(composed.weights, "composing"));
  return composed;
}

namespace {

absl::StatusOr<ModelDirectory> ReadModelDirectoryOrThrow(const std::string& path) {
  const fs::path dir(path);
  ModelDirectory model;
  model.path = path;
  TCM_ASSIGN_OR_RETURN(model.config, ReadModelConfigFile((dir / "config.pbtxt").string()));
  model.name =
      model.config.name().empty() ? fs::absolute(dir).lexically_normal().filename().string() : model.config.name();
  if (model.name.empty()) model.name = fs::absolute(dir).parent_path().filename().string();
  if (absl::Status named = CheckModelName(model.name); !named.ok())
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", named.message(), " (config.pbtxt's name, ", "else the directory's)"));
  model.config.set_name(model.name);

  const std::string weights_path = (dir / "weights.safetensors").string();
  TCM_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Read(weights_path));
  // Validate the weights against the configuration by loading them once.
  // LibTorch's exceptions stop here, as one line naming the directory.
  try {
    model.weights = ToTensors(file);
    auto probe = Denoiser::Create(model.config);
    if (!probe.ok()) return absl::Status(probe.status().code(), absl::StrCat(path, ": ", probe.status().message()));
    TCM_RETURN_IF_ERROR((*probe)->LoadStateDict(model.weights, weights_path));
    // Finite as the network holds them, after the conversion to its dtype:
    // an F64 weight of 1e300 is finite in the file but +inf as F32.
    for (const auto& [name, held] : (*probe)->StateDict()) {
      if (!held.is_floating_point() || torch::isfinite(held).all().item<bool>()) continue;
      const torch::ScalarType stored = model.weights.at(name).scalar_type();
      const std::string converted =
          stored == held.scalar_type()
              ? ""
              : absl::StrCat(" once converted from ", c10::toString(stored), " to ", c10::toString(held.scalar_type()));
      return absl::InvalidArgumentError(
          absl::StrCat(weights_path, ": weight '", name, "' holds NaN or infinite values", converted));
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(path, ": loading the model failed: ", ExceptionMessage(e)));
  }
  TCM_ASSIGN_OR_RETURN(model.labels, ReadLabels(dir / "labels.txt", model.config.num_classes()));
  return model;
}

}  // namespace

std::vector<std::string> ModelNetworkFiles(const std::string& dir) {
  return {(fs::path(dir) / "config.pbtxt").string(), (fs::path(dir) / "weights.safetensors").string()};
}

absl::StatusOr<ModelDirectory> ReadModelDirectory(const std::string& path) {
  try {  // a file system error or a file too large for memory is a model that does not load
    return ReadModelDirectoryOrThrow(path);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(path, ": reading the model failed: ", ExceptionMessage(e)));
  }
}

absl::StatusOr<std::shared_ptr<Denoiser>> BuildReplica(const ModelDirectory& model) {
  TCM_ASSIGN_OR_RETURN(auto denoiser, Denoiser::Create(model.config));
  TCM_RETURN_IF_ERROR(denoiser->LoadStateDict(model.weights, model.path));
  denoiser->eval();
  try {
    denoiser->PrepareForInference();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(model.path, ": preparing for inference failed: ", ExceptionMessage(e)));
  }
  return denoiser;
}

bool IsModelFolder(const fs::directory_entry& entry) {
  const std::string name = entry.path().filename().string();
  if (name.empty() || name.front() == '.') return false;
  std::error_code ec;  // an entry that cannot be examined (a link loop, no permission) is no model
  return entry.is_directory(ec) && fs::exists(entry.path() / "config.pbtxt", ec);
}

absl::StatusOr<std::vector<ModelDirectory>> ReadModelRepository(const std::string& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return absl::NotFoundError(absl::StrCat(root, ": not a directory"));
  std::vector<ModelDirectory> models;
  std::set<std::string> names;
  for (fs::directory_iterator it(root, ec), end; it != end; it.increment(ec)) {
    if (!IsModelFolder(*it)) continue;
    const fs::directory_entry& entry = *it;
    TCM_ASSIGN_OR_RETURN(auto model, ReadModelDirectory(entry.path().string()));
    if (!names.insert(model.name).second)
      return absl::InvalidArgumentError(absl::StrCat(root, ": two models are named '", model.name, "'"));
    models.push_back(std::move(model));
  }
  if (ec) return absl::FailedPreconditionError(absl::StrCat(root, ": cannot read the directory: ", ec.message()));
  if (models.empty())
    return absl::NotFoundError(absl::StrCat(root, ": no model directories (folders with a config.pbtxt)"));
  std::sort(models.begin(), models.end(),
            [](const ModelDirectory& a, const ModelDirectory& b) { return a.name < b.name; });
  return models;
}

absl::Status WriteModelDirectory(const std::string& path, const v1::ModelConfig& config, const TensorMap& weights,
                                 const std::vector<std::string>& labels) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot create directory: ", ec.message()));
  std::string text;
  google::protobuf::TextFormat::PrintToString(config, &text);
  TCM_RETURN_IF_ERROR(WriteFileAtomically((fs::path(path) / "config.pbtxt").string(), text));
  TCM_RETURN_IF_ERROR(
      WriteTensors((fs::path(path) / "weights.safetensors").string(), weights,
                   {{"config", ReferenceKwargsFromModelConfig(config)}, {"format", "state_dict of ECMPrecond"}}));
  if (!labels.empty()) {
    std::string lines;
    for (const auto& l : labels) absl::StrAppend(&lines, l, "\n");
    TCM_RETURN_IF_ERROR(WriteFileAtomically((fs::path(path) / "labels.txt").string(), lines));
  }
  return absl::OkStatus();
}

}  // namespace tcm
