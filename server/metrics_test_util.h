// Reading a prometheus-cpp registry in unit tests. Header-only.
#ifndef TCM_SERVER_METRICS_TEST_UTIL_H_
#define TCM_SERVER_METRICS_TEST_UTIL_H_

#include <prometheus/registry.h>

#include <map>
#include <optional>
#include <string>

namespace tcm::testing {

// The value of the first sample of family `name` whose labels include
// `labels` (counter, gauge, or a histogram's count); nullopt when none does.
// With `sum`, the sum over every such sample instead.
inline std::optional<double> Sample(prometheus::Registry& registry, const std::string& name,
                                    const std::map<std::string, std::string>& labels, bool sum = false) {
  std::optional<double> total;
  for (const auto& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const auto& metric : family.metric) {
      size_t matched = 0;
      for (const auto& label : metric.label) {
        auto it = labels.find(label.name);
        if (it != labels.end() && it->second == label.value) ++matched;
      }
      if (matched != labels.size()) continue;
      double value = 0;
      switch (family.type) {
        case prometheus::MetricType::Counter:
          value = metric.counter.value;
          break;
        case prometheus::MetricType::Gauge:
          value = metric.gauge.value;
          break;
        case prometheus::MetricType::Histogram:
          value = static_cast<double>(metric.histogram.sample_count);
          break;
        default:
          return std::nullopt;
      }
      if (!sum) return value;
      total = total.value_or(0) + value;
    }
  }
  return total;
}

}  // namespace tcm::testing

#endif  // TCM_SERVER_METRICS_TEST_UTIL_H_
