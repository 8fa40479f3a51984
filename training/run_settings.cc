#include "training/run_settings.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/write_file.h"
#include "nlohmann/json.hpp"

namespace tcm {

absl::Status WriteRunSettings(const std::string& path, const RunSettings& settings) {
  return WriteFileAtomically(path, nlohmann::json(settings).dump(2) + "\n");
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

absl::Status TrimStepLog(const std::string& path, int64_t last_step) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::OkStatus();
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t keep = 0;  // bytes kept: whole lines up to the first one to drop
  while (keep < text.size()) {
    const size_t end = text.find('\n', keep);
    if (end == std::string::npos) break;  // a partial last line
    const nlohmann::json line =
        nlohmann::json::parse(text.begin() + keep, text.begin() + end, nullptr, /*allow_exceptions=*/false);
    if (line.is_object() && line.contains("step") && line["step"].is_number() &&
        line["step"].get<double>() > double(last_step))
      break;
    keep = end + 1;
  }
  if (keep == text.size()) return absl::OkStatus();
  std::error_code error;
  std::filesystem::resize_file(path, keep, error);
  if (error)
    return absl::DataLossError(absl::StrCat(path, ": cannot cut it back to step ", last_step, ": ", error.message()));
  return absl::OkStatus();
}

absl::StatusOr<std::string> FileDigest(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
  uint64_t hash = 14695981039346656037ull;  // FNV-1a, 64 bits
  char buffer[1 << 16];
  while (in.read(buffer, sizeof(buffer)) || in.gcount() > 0) {
    for (std::streamsize i = 0; i < in.gcount(); ++i) {
      hash ^= uint8_t(buffer[i]);
      hash *= 1099511628211ull;
    }
    if (!in) break;
  }
  if (in.bad()) return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
  return absl::StrCat("fnv1a64:", absl::Hex(hash, absl::kZeroPad16));
}

}  // namespace tcm
