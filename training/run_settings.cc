#include "training/run_settings.h"

#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/read_file.h"
#include "common/write_file.h"
#include "nlohmann/json.hpp"

namespace tcm {

absl::Status WriteRunSettings(const std::string& path, const RunSettings& settings) {
  return WriteFileAtomically(path, nlohmann::json(settings).dump(2) + "\n");
}

absl::StatusOr<RunSettings> ReadRunSettings(const std::string& path) {
  // A directory or FIFO in its place is refused by name (RegularFile), not read.
  const absl::StatusOr<std::string> text = ReadRegularFile(path);
  if (absl::IsNotFound(text.status())) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  if (!text.ok()) return text.status();
  const nlohmann::json json = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
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
  const absl::StatusOr<std::string> read = ReadRegularFile(path);
  if (absl::IsNotFound(read.status())) return absl::OkStatus();
  if (!read.ok()) return read.status();
  const std::string& text = *read;
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

namespace {

// FNV-1a, 64 bits, continued over `bytes`.
class Fnv1a64 {
 public:
  void Add(absl::string_view bytes) {
    for (char byte : bytes) {
      hash_ ^= uint8_t(byte);
      hash_ *= 1099511628211ull;
    }
  }
  std::string Digest() const { return absl::StrCat("fnv1a64:", absl::Hex(hash_, absl::kZeroPad16)); }

 private:
  uint64_t hash_ = 14695981039346656037ull;
};

}  // namespace

absl::StatusOr<std::string> FileDigest(const std::string& path) {
  auto file = RegularFile::Open(path);
  if (absl::IsNotFound(file.status())) return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
  if (!file.ok()) return file.status();
  Fnv1a64 hash;
  std::string chunk;
  for (uint64_t offset = 0;; offset += chunk.size()) {
    if (absl::Status read = (*file)->ReadUpTo(offset, 1 << 16, &chunk); !read.ok()) return read;
    if (chunk.empty()) break;
    hash.Add(chunk);
  }
  return hash.Digest();
}

absl::StatusOr<std::string> FilesDigest(const std::vector<std::string>& paths) {
  Fnv1a64 hash;
  for (const std::string& path : paths) {
    absl::StatusOr<std::string> digest = FileDigest(path);
    if (!digest.ok()) return digest.status();
    // The NUL and the line break keep one file's path and digest from running into the next's.
    hash.Add(absl::StrCat(path, absl::string_view("\0", 1), *digest, "\n"));
  }
  return absl::StrCat(paths.size(), paths.size() == 1 ? " file " : " files ", hash.Digest());
}

}  // namespace tcm
