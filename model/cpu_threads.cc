#include "model/cpu_threads.h"

#include <dlfcn.h>
#include <sched.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"

namespace tcm {

bool SetBlasThreads(int threads) {
  using SetThreadsFn = void (*)(int);
  static auto* set_threads = reinterpret_cast<SetThreadsFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (set_threads == nullptr) return false;
  set_threads(threads);
  return true;
}

int AvailableCores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  return 1;
}

absl::Status CheckThreadsFlag(int threads) {
  if (threads >= 0 && threads <= kMaxIntraOpThreads) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("--threads: must be in [0, ", kMaxIntraOpThreads, "] (0 = one per core), got ", threads));
}

void ConfigureCpuThreads(int intra_op_threads) {
  torch::set_num_threads(intra_op_threads > 0 ? intra_op_threads : AvailableCores());
  SetBlasThreads(1);
}

}  // namespace tcm
