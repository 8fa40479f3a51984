#include "model/malloc_config.h"

#include <malloc.h>

namespace tcm {

bool KeepFreedMemoryForReuse() {
#ifdef M_MMAP_THRESHOLD
  constexpr int kMiB = 1 << 20;
  bool ok = mallopt(M_MMAP_THRESHOLD, 32 * kMiB) == 1;  // glibc's largest mmap threshold
  ok = mallopt(M_TRIM_THRESHOLD, 1024 * kMiB) == 1 && ok;
  ok = mallopt(M_TOP_PAD, 64 * kMiB) == 1 && ok;
  return ok;
#else
  return false;
#endif
}

}  // namespace tcm
