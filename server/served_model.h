// What the service layer knows of a served model: plain data built once at
// start from its config, its labels and its queue. Torch-free.
#ifndef TCM_SERVER_SERVED_MODEL_H_
#define TCM_SERVER_SERVED_MODEL_H_

#include <string>
#include <vector>

#include "server/batcher.h"
#include "tcm/v1/model_config.pb.h"
#include "tcm/v1/tcm_service.pb.h"

namespace tcm {

struct ServedModel {
  std::string name;
  unsigned num_classes = 0;  // 0 = unconditional
  unsigned default_steps = 1;
  // Most images its queue can ever take at once (0 = no limit of its own);
  // a request above it could never be queued, so it is a bad request.
  unsigned max_images = 0;
  std::string architecture;
  unsigned resolution = 0, channels = 0;
  double mid_t = 0, t_max = 0;
  std::vector<std::string> class_names;  // labels.txt; may be empty
  std::string precision;                 // as served: "fp32", "bf16" or "fp16"
  unsigned priority_levels = 1;          // a request's priority may be 1..priority_levels
  unsigned default_priority_level = 1;   // the level of a request with priority 0
  bool cacheable = true;                 // config caching.enable (unset = true)
};

// The description of model `name` with `config` (its instance.precision
// already resolved: see ResolvePrecision), class names `labels` and the
// batcher's `queue` for it (merged with the flags: see MergeQueueOptions).
ServedModel DescribeModel(const std::string& name, const v1::ModelConfig& config,
                          const std::vector<std::string>& labels, const Batcher::ModelQueueOptions& queue);

// tcm.v1 ListModels' answer for `models`, of which `default_model` (an index) is the default.
v1::ListModelsResponse ModelList(const std::vector<ServedModel>& models, int default_model);

}  // namespace tcm

#endif  // TCM_SERVER_SERVED_MODEL_H_
