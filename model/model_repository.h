// Model directories and the model repository (a folder of model directories).
//
//   NAME/config.pbtxt        tcm.v1.ModelConfig in protobuf text format
//   NAME/weights.safetensors reference ECMPrecond state_dict key names
//   NAME/labels.txt          optional, one class name per line
#ifndef TCM_MODEL_MODEL_REPOSITORY_H_
#define TCM_MODEL_MODEL_REPOSITORY_H_

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/denoiser.h"
#include "model/tensor_io.h"
#include "tcm/v1/model_config.pb.h"

namespace tcm {

// The validated contents of one model directory. Build as many replicas from
// it as there are workers.
struct ModelDirectory {
  std::string name;  // config `name`, else the directory's name
  std::string path;
  v1::ModelConfig config;  // completed
  TensorMap weights;
  std::vector<std::string> labels;  // empty, or one per class
};

// The files of a model directory that hold its network: config.pbtxt and
// weights.safetensors (labels.txt names its classes only).
std::vector<std::string> ModelNetworkFiles(const std::string& dir);

// Reads and validates a model directory: the configuration, the weights
// against it (missing / extra keys, shapes) and the labels' count. Errors are
// one line naming the file and the field or key.
absl::StatusOr<ModelDirectory> ReadModelDirectory(const std::string& path);

// A ready-to-run replica: weights loaded, eval mode, inference constants computed.
absl::StatusOr<std::shared_ptr<Denoiser>> BuildReplica(const ModelDirectory& model);

// The first setting of the network's shape in which `a` and `b` differ, as
// "NAME: A_NAME's VALUE, B_NAME's VALUE" in the reference's keyword names;
// empty when they hold the same network. Dropout, a training setting, is not
// compared.
std::string NetworkDifference(const v1::ModelConfig& a, const std::string& a_name, const v1::ModelConfig& b,
                              const std::string& b_name);

// TCM's composition as one model: `above` (the stage-2 network) for noise
// levels >= transition_t, `below` (the stage-1 network) under it. The two must
// have the same network configuration; the result takes `above`'s name, path,
// labels and sampling settings, and its weights hold `below`'s under
// `below_transition.` (see ModelConfig.transition_t).
absl::StatusOr<ModelDirectory> ComposeTruncated(const ModelDirectory& above, const ModelDirectory& below,
                                                double transition_t);

// Every model directory directly under `root` (sub-folders holding a
// config.pbtxt and not hidden, see IsModelFolder), sorted by name. Fails if any of them fails to load, if two
// share a name, or if there is none.
absl::StatusOr<std::vector<ModelDirectory>> ReadModelRepository(const std::string& root);

// Whether `entry` of a model repository is a model folder: a directory holding
// a config.pbtxt whose name does not start with '.'. Hidden folders are where
// a model is staged before it is renamed into place, so they are never served.
bool IsModelFolder(const std::filesystem::directory_entry& entry);

// Writes a model directory (config.pbtxt, weights.safetensors, labels.txt when
// `labels` is non-empty). Used by training export and tests.
absl::Status WriteModelDirectory(const std::string& path, const v1::ModelConfig& config, const TensorMap& weights,
                                 const std::vector<std::string>& labels);

}  // namespace tcm

#endif  // TCM_MODEL_MODEL_REPOSITORY_H_
