// The model configuration (`tcm.v1.ModelConfig`): reading `config.pbtxt`,
// filling in reference defaults and validating, and translating the
// reference `ECMPrecond` keyword arguments (JSON) into it. Torch-free.
#ifndef TCM_MODEL_MODEL_CONFIG_H_
#define TCM_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "tcm/v1/model_config.pb.h"

namespace tcm {

inline constexpr absl::string_view kEdm2UNet = "EDM2UNet";
inline constexpr absl::string_view kSongUNet = "SongUNet";

// The sane range of every size in a config, checked before anything is
// built: a network past them is refused with the field and the limit, not
// allocated. The released NVlabs models sit far inside them (ImageNet 64x64
// EDM2-XL: model_channels 384, channel_mult up to 4, 3 blocks, 1000 classes).
struct ConfigLimits {
  static constexpr uint32_t kMaxResolution = 4096;       // img_resolution
  static constexpr uint32_t kMaxClasses = 100000;        // num_classes
  static constexpr uint32_t kMaxModelChannels = 4096;    // edm2/song.model_channels
  static constexpr uint32_t kMaxChannelMult = 64;        // each channel_mult entry, channel_mult_emb/noise
  static constexpr int kMaxLevels = 8;                   // entries of channel_mult
  static constexpr uint32_t kMaxLevelChannels = 16384;   // model_channels x any multiplier (levels, embedding)
  static constexpr uint32_t kMaxBlocks = 64;             // num_blocks
  static constexpr uint32_t kMaxChannelsPerHead = 4096;  // edm2.channels_per_head
  static constexpr uint32_t kMaxAugmentDim = 1024;       // song.augment_dim
  static constexpr int kMaxFilterTaps = 16;              // resample_filter entries
  static constexpr int kMaxListEntries = 16;             // attn_resolutions, dout_resolutions entries
  static constexpr double kMaxParameters = 4e9;          // estimated weights of the network
  // Estimated activation values a forward pass of a full batch holds at once
  // (see EstimatedActivationValues): 16 GiB in fp32.
  static constexpr double kMaxBatchActivationValues = 4294967296.0;
  static constexpr float kMaxTMax = 1e4f;                 // t_max (the released models use 80)
  static constexpr uint32_t kMaxBatchSize = 65536;        // batching.max_batch_size
  static constexpr uint32_t kMaxQueueSize = 1u << 24;     // batching.max_queue_size
  static constexpr uint64_t kMaxQueueDelayUs = 60000000;  // batching.max_queue_delay_us (one minute)
  static constexpr uint32_t kMaxPriorityLevels = 16;      // batching.priority_levels, default_priority_level
  static constexpr uint32_t kMaxInstances = 1024;         // instance.count
};

// The values img_channels may take: those the image encoders write (1 =
// grey, 3 = RGB, 4 = RGBA).
inline constexpr uint32_t kImageChannelChoices[] = {1, 3, 4};

// Returns `config` with every optional field set to its reference default,
// or an InvalidArgument error naming the first bad field and what is allowed
// (sizes outside ConfigLimits included). Every float field must be finite.
// The activations are checked for batches of batching.max_batch_size images,
// or for one image when it is unset: a server that runs the model at another
// batch size (its --max_batch_size) must also call CheckBatchActivations with
// that size.
absl::StatusOr<v1::ModelConfig> CompleteModelConfig(v1::ModelConfig config);

// A rough count of the activation values one image's forward pass holds at
// once: the encoder's outputs kept for the decoder's skip connections
// (num_blocks + 1 per level) plus a working set of 8 activations of the
// widest level (a block's input, the join of it and a skip, which is twice as
// wide, and the block's intermediates). Measured on the CPU, a one-level
// network peaked at 7 to 9 such activations above its skips.
double EstimatedActivationValues(const v1::ModelConfig& config);

// OK when batches of `max_batch_size` images of `config` stay within
// ConfigLimits::kMaxBatchActivationValues; else an InvalidArgument error
// naming `batch_field` (where the batch size comes from, such as
// "batching.max_batch_size" or "--max_batch_size"), the estimate and the limit.
absl::Status CheckBatchActivations(const v1::ModelConfig& config, uint64_t max_batch_size,
                                   absl::string_view batch_field);

// OK for a name a model may be served under: 1 to 200 letters, digits, '-',
// '_' and '.', not starting with '.' (so not "." or "..", nor a hidden
// staging folder's name): safe in URLs, metric labels and the file names
// clients write; else an error naming it and the rule.
absl::Status CheckModelName(const std::string& name);

// The largest config.pbtxt read (a real one has a few hundred bytes).
inline constexpr uint64_t kMaxConfigFileBytes = 1 << 20;

// Parses a `config.pbtxt` (protobuf text format) and completes it; the file
// must be a regular file of at most kMaxConfigFileBytes.
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
