// Scheduling priority of the calling thread. Torch-free.
#ifndef TCM_COMMON_THREAD_PRIORITY_H_
#define TCM_COMMON_THREAD_PRIORITY_H_

#include "absl/status/status.h"

namespace tcm {

// Raises the calling thread's nice value by `increment` (0..19; 0 does
// nothing). Threads it creates afterwards (an OpenMP team, for one) inherit
// the new value. Raising needs no privilege; it cannot be undone without one.
absl::Status LowerThisThreadPriority(int increment);

// The calling thread's nice value.
int ThisThreadNice();

}  // namespace tcm

#endif  // TCM_COMMON_THREAD_PRIORITY_H_
