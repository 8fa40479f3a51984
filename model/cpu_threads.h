// Thread settings of the CPU math libraries, set once per process.
#ifndef TCM_MODEL_CPU_THREADS_H_
#define TCM_MODEL_CPU_THREADS_H_

#include "absl/status/status.h"

namespace tcm {

// More intra-op threads than any machine has cores are a mistake (and far
// more fail inside OpenMP's allocation instead of with a message).
constexpr int kMaxIntraOpThreads = 1024;

// A tool's --threads: OK in [0, kMaxIntraOpThreads], else one line naming the
// flag, the range and the value.
absl::Status CheckThreadsFlag(int threads);

// Sets LibTorch's intra-op threads (0 = one per core) and makes the BLAS
// library single-threaded, since LibTorch already parallelises around its
// calls: nested OpenBLAS threads oversubscribed the cores and made a batch-1
// forward pass three times slower on a 2-core machine.
void ConfigureCpuThreads(int intra_op_threads);

// Threads OpenBLAS uses per call. Returns false (and does nothing) when the
// BLAS library in use is not OpenBLAS.
bool SetBlasThreads(int threads);

// Cores available to this process.
int AvailableCores();

}  // namespace tcm

#endif  // TCM_MODEL_CPU_THREADS_H_
