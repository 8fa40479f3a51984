#include "model/op_profile.h"

#include <torch/csrc/autograd/profiler_legacy.h>

#include <algorithm>
#include <map>

#include "absl/strings/str_format.h"

namespace tcm {

std::vector<OpTime> ProfileOps(const std::function<void()>& fn, int runs) {
  namespace profiler = torch::autograd::profiler;
  profiler::enableProfilerLegacy(torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::CPU));
  for (int i = 0; i < runs; ++i) fn();
  const profiler::thread_event_lists threads = profiler::disableProfilerLegacy();

  std::map<std::string, OpTime> by_name;
  for (const auto& events : threads) {
    // Ranges nest per thread: a push opens an operation, its pop closes the
    // innermost one; children's time is taken out of their parent's.
    struct Open {
      const profiler::LegacyEvent* push;
      double children_us = 0;
    };
    std::vector<Open> stack;
    for (const auto& e : events) {
      if (e.kindStr() == "push") {
        stack.push_back({&e});
      } else if (e.kindStr() == "pop" && !stack.empty()) {
        const Open open = stack.back();
        stack.pop_back();
        const double total_us = open.push->cpuElapsedUs(e);
        OpTime& op = by_name[open.push->name()];
        op.name = open.push->name();
        op.self_ms += (total_us - open.children_us) / 1e3;
        ++op.calls;
        if (!stack.empty()) stack.back().children_us += total_us;
      }
    }
  }
  std::vector<OpTime> ops;
  for (auto& [name, op] : by_name) {
    op.self_ms /= std::max(runs, 1);
    op.calls /= std::max(runs, 1);
    ops.push_back(op);
  }
  std::sort(ops.begin(), ops.end(), [](const OpTime& a, const OpTime& b) { return a.self_ms > b.self_ms; });
  return ops;
}

std::string OpTable(const std::vector<OpTime>& ops, size_t top) {
  double total = 0;
  for (const auto& op : ops) total += op.self_ms;
  std::string text = absl::StrFormat("%-44s %10s %7s %7s\n", "operation", "ms/pass", "share", "calls");
  for (size_t i = 0; i < ops.size() && i < top; ++i)
    text += absl::StrFormat("%-44s %10.2f %6.1f%% %7d\n", ops[i].name, ops[i].self_ms,
                            total > 0 ? 100 * ops[i].self_ms / total : 0.0, static_cast<int>(ops[i].calls));
  text += absl::StrFormat("%-44s %10.2f\n", "all operations", total);
  return text;
}

}  // namespace tcm
