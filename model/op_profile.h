// Where a network's time goes: LibTorch's profiler around a callable, its
// operations summed by name. For the benchmarks.
#ifndef TCM_MODEL_OP_PROFILE_H_
#define TCM_MODEL_OP_PROFILE_H_

#include <functional>
#include <string>
#include <vector>

namespace tcm {

struct OpTime {
  std::string name;    // LibTorch's operation name, e.g. "aten::mkldnn_convolution"
  double self_ms = 0;  // time inside the operation, less the operations it called
  int64_t calls = 0;
};

// Runs `fn` `runs` times under the profiler (on the calling thread); returns
// each operation's self time per run, largest first.
std::vector<OpTime> ProfileOps(const std::function<void()>& fn, int runs);

// The first `top` rows as an aligned table, with each one's share of the total.
std::string OpTable(const std::vector<OpTime>& ops, size_t top);

}  // namespace tcm

#endif  // TCM_MODEL_OP_PROFILE_H_
