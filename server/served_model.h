// What the service layer knows of a served model version: plain data built
// when it is loaded (at start, or by model control) from its config, its
// labels and its queue. Torch-free.
#ifndef TCM_SERVER_SERVED_MODEL_H_
#define TCM_SERVER_SERVED_MODEL_H_

#include <memory>
#include <mutex>
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
  // Index of this version's queue in the batcher and of its metrics; a
  // reload gets a new one.
  int slot = 0;
  unsigned version = 1;  // 1 when first loaded, one more on every reload
};

// `models` with slots 0..n-1 in their order: the server's models at start.
std::vector<ServedModel> NumberSlots(std::vector<ServedModel> models);

// The description of model `name` with `config` (its instance.precision
// already resolved: see ResolvePrecision), class names `labels` and the
// batcher's `queue` for it (merged with the flags: see MergeQueueOptions).
ServedModel DescribeModel(const std::string& name, const v1::ModelConfig& config,
                          const std::vector<std::string>& labels, const Batcher::ModelQueueOptions& queue);

// The models the front ends serve at one moment, in ListModels order, and
// which of them is the default (an index into `models`; -1 = none is served).
// Published whole and never changed: a change publishes a new table.
struct ModelTable {
  std::vector<ServedModel> models;
  int default_model = 0;

  // The default model; null when none is served.
  const ServedModel* Default() const {
    return default_model >= 0 && default_model < static_cast<int>(models.size()) ? &models[default_model] : nullptr;
  }
};

// The ModelTable the front ends serve now. Model control publishes a new
// table on every load, reload and unload; a call works on the table it read
// when it started. Thread-safe.
class ModelCatalog {
 public:
  explicit ModelCatalog(ModelTable table) : table_(std::make_shared<const ModelTable>(std::move(table))) {}
  std::shared_ptr<const ModelTable> Get() const {
    std::lock_guard<std::mutex> lock(mu_);
    return table_;
  }
  // Returns the table now published.
  std::shared_ptr<const ModelTable> Publish(ModelTable table) {
    auto published = std::make_shared<const ModelTable>(std::move(table));
    std::lock_guard<std::mutex> lock(mu_);
    table_ = published;
    return published;
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const ModelTable> table_;
};

// tcm.v1's description of `model`.
v1::ModelInfo ModelInfoOf(const ServedModel& model, bool is_default);

// tcm.v1 ListModels' answer for `table`.
v1::ListModelsResponse ModelList(const ModelTable& table);

}  // namespace tcm

#endif  // TCM_SERVER_SERVED_MODEL_H_
