// What the service layer knows of a served model: plain data built once at
// start from its config, its labels and its queue. Torch-free.
#ifndef TCM_SERVER_SERVED_MODEL_H_
#define TCM_SERVER_SERVED_MODEL_H_

#include <string>
#include <vector>

#include "tcm/v1/model_config.pb.h"

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
};

// The description of model `name` with `config` (its instance.precision
// already resolved: see ResolvePrecision), class names `labels` and a queue
// of `max_queue_size` images.
ServedModel DescribeModel(const std::string& name, const v1::ModelConfig& config,
                          const std::vector<std::string>& labels, size_t max_queue_size);

}  // namespace tcm

#endif  // TCM_SERVER_SERVED_MODEL_H_
