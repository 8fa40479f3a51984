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

std::vector<ServedModel> NumberSlots(std::vector<ServedModel> models) {
  for (size_t i = 0; i < models.size(); ++i) models[i].slot = static_cast<int>(i);
  return models;
}

v1::ModelInfo ModelInfoOf(const ServedModel& m, bool is_default) {
  v1::ModelInfo info;
  info.set_name(m.name);
  info.set_architecture(m.architecture);
  info.set_resolution(m.resolution);
  info.set_channels(m.channels);
  info.set_num_classes(m.num_classes);
  for (const auto& label : m.class_names) info.add_class_names(label);
  info.set_default_steps(m.default_steps);
  info.set_mid_t(static_cast<float>(m.mid_t));
  info.set_t_max(static_cast<float>(m.t_max));
  info.set_is_default(is_default);
  info.set_precision(m.precision);
  info.set_priority_levels(m.priority_levels);
  info.set_default_priority_level(m.default_priority_level);
  info.set_version(m.version);
  return info;
}

v1::ListModelsResponse ModelList(const ModelTable& table) {
  v1::ListModelsResponse list;
  for (size_t i = 0; i < table.models.size(); ++i)
    *list.add_models() = ModelInfoOf(table.models[i], static_cast<int>(i) == table.default_model);
  return list;
}

}  // namespace tcm
