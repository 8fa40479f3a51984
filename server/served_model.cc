#include "server/served_model.h"

#include <algorithm>
#include <cstdint>

#include "server/server_options.h"

namespace tcm {

ServedModel DescribeModel(const std::string& name, const v1::ModelConfig& config,
                          const std::vector<std::string>& labels, const Batcher::ModelQueueOptions& queue) {
  ServedModel m;
  m.name = name;
  m.num_classes = config.num_classes();
  m.default_steps = config.default_steps();
  m.max_images = static_cast<unsigned>(std::min<size_t>(queue.max_queue_size, UINT32_MAX));
  m.priority_levels = static_cast<unsigned>(queue.priority_levels);
  m.default_priority_level = static_cast<unsigned>(queue.default_priority_level);
  m.cacheable = !config.caching().has_enable() || config.caching().enable();
  m.architecture = config.architecture();
  m.resolution = config.img_resolution();
  m.channels = config.img_channels();
  m.mid_t = config.mid_t();
  m.t_max = config.t_max();
  m.class_names = labels;
  m.precision = PrecisionName(config.instance().precision());
  return m;
}

}  // namespace tcm
