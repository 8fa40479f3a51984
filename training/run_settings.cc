#include "training/run_settings.h"

#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace tcm {

absl::Status WriteRunSettings(const std::string& path, const RunSettings& settings) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << nlohmann::json(settings).dump(2) << "\n";
    if (!out) return absl::DataLossError(absl::StrCat(path, ": cannot write the run's settings"));
  }
  std::error_code error;
  std::filesystem::rename(tmp, path, error);
  if (error) return absl::DataLossError(absl::StrCat(path, ": cannot write the run's settings: ", error.message()));
  return absl::OkStatus();
}

absl::StatusOr<RunSettings> ReadRunSettings(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  const nlohmann::json json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object())
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object of the run's settings"));
  RunSettings settings;
  for (const auto& [name, value] : json.items()) {
    if (!value.is_string())
      return absl::InvalidArgumentError(absl::StrCat(path, ": setting \"", name, "\" is not a string"));
    settings.emplace(name, value.get<std::string>());
  }
  return settings;
}

std::vector<std::string> DescribeSettingChanges(const RunSettings& recorded, const RunSettings& now) {
  std::set<std::string> names;
  for (const auto& [name, value] : recorded) names.insert(name);
  for (const auto& [name, value] : now) names.insert(name);
  auto value_of = [](const RunSettings& settings, const std::string& name) {
    const auto it = settings.find(name);
    return it == settings.end() ? std::string("unset") : it->second;
  };
  std::vector<std::string> changes;
  for (const std::string& name : names) {
    const std::string before = value_of(recorded, name), after = value_of(now, name);
    if (before != after) changes.push_back(absl::StrCat("--", name, ": the run's ", before, ", now ", after));
  }
  return changes;
}

}  // namespace tcm
