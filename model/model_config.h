// The model configuration (`tcm.v1.ModelConfig`): reading `config.pbtxt`,
// filling in reference defaults and validating, and translating the
// reference `ECMPrecond` keyword arguments (JSON) into it. Torch-free.
#ifndef TCM_MODEL_MODEL_CONFIG_H_
#define TCM_MODEL_MODEL_CONFIG_H_

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "tcm/v1/model_config.pb.h"

namespace tcm {

inline constexpr absl::string_view kEdm2UNet = "EDM2UNet";
inline constexpr absl::string_view kSongUNet = "SongUNet";

// Returns `config` with every optional field set to its reference default,
// or an InvalidArgument error naming the first bad field and what is allowed.
absl::StatusOr<v1::ModelConfig> CompleteModelConfig(v1::ModelConfig config);

// Parses a `config.pbtxt` (protobuf text format) and completes it.
absl::StatusOr<v1::ModelConfig> ReadModelConfigFile(const std::string& path);
absl::StatusOr<v1::ModelConfig> ParseModelConfigText(absl::string_view text, const std::string& source);

// Maps the JSON of the reference ECMPrecond keyword arguments (the `config`
// metadata of a reference state dict) to a completed ModelConfig. Unknown
// keys are an error, so that no architecture detail is silently dropped.
absl::StatusOr<v1::ModelConfig> ModelConfigFromReferenceKwargs(absl::string_view json);

// The inverse: reference ECMPrecond keyword arguments for a completed config.
std::string ReferenceKwargsFromModelConfig(const v1::ModelConfig& config);

// Number of resolution levels of the network (entries of channel_mult).
int NumLevels(const v1::ModelConfig& config);

}  // namespace tcm

#endif  // TCM_MODEL_MODEL_CONFIG_H_
