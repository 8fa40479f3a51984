// The settings that shape a training run's result (stage, data, network,
// optimiser, schedules, seed), recorded in RUN/settings.json when the run
// starts so that --resume can refuse to continue it with other ones. Settings
// that only pace the run (--steps, --threads, --log_every, ...) are not part
// of it and may change between sittings.
#ifndef TCM_TRAINING_RUN_SETTINGS_H_
#define TCM_TRAINING_RUN_SETTINGS_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tcm {

// Setting name (a flag's name, or "stage") -> its value as text.
using RunSettings = std::map<std::string, std::string>;

// Writes `settings` as one JSON object (through a temporary file and a rename).
absl::Status WriteRunSettings(const std::string& path, const RunSettings& settings);

// NotFound when `path` does not exist; InvalidArgument when it is not a JSON
// object of strings.
absl::StatusOr<RunSettings> ReadRunSettings(const std::string& path);

// One line per setting whose value differs, or that only one side has, in name
// order: `--lr: the run's 0.001, now 0.002` (a missing value reads "unset").
// Empty when the two are equal.
std::vector<std::string> DescribeSettingChanges(const RunSettings& recorded, const RunSettings& now);

// Cuts a JSON-lines log whose lines carry a "step" (log.jsonl, eval.jsonl)
// back to what a run resumed at `last_step` has done: from its first line of
// a later step, or its first line that does not end in a line break (a line
// cut off by a crash), everything is removed, so that the resumed run's lines
// follow without repeats. A missing file is left missing.
absl::Status TrimStepLog(const std::string& path, int64_t last_step);

// A digest of a file's contents ("fnv1a64:" and 16 hex digits), to notice a
// file changed under the same name; NotFound when it cannot be read.
absl::StatusOr<std::string> FileDigest(const std::string& path);

// One digest of many files, in the order given: their count ("1 file",
// "N files"), then "fnv1a64:" and 16 hex digits over each one's path and FileDigest, so that a file
// changed, added, removed or renamed changes it; the first error otherwise.
absl::StatusOr<std::string> FilesDigest(const std::vector<std::string>& paths);

}  // namespace tcm

#endif  // TCM_TRAINING_RUN_SETTINGS_H_
