// Thread settings of the CPU math libraries, set once per process.
#ifndef TCM_MODEL_CPU_THREADS_H_
#define TCM_MODEL_CPU_THREADS_H_

namespace tcm {

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
