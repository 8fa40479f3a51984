// What the CPU can do, read once from /proc/cpuinfo. Torch-free.
#ifndef TCM_COMMON_CPU_FEATURES_H_
#define TCM_COMMON_CPU_FEATURES_H_

#include "absl/strings/string_view.h"

namespace tcm {

// True when `cpuinfo` (the text of /proc/cpuinfo) lists native bf16
// arithmetic on its first processor: the avx512_bf16 or amx_bf16 flag.
bool CpuInfoHasNativeBf16(absl::string_view cpuinfo);

// The same for this machine (false when /proc/cpuinfo cannot be read).
bool CpuHasNativeBf16();

}  // namespace tcm

#endif  // TCM_COMMON_CPU_FEATURES_H_
