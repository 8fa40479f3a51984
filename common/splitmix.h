// SplitMix64 (Steele, Lea and Flood): the one 64-bit mixer behind every seed
// the project derives (per-image noise streams, random class labels, load
// plans). Changing it changes every image a seed gives.
#ifndef TCM_COMMON_SPLITMIX_H_
#define TCM_COMMON_SPLITMIX_H_

#include <cstdint>

namespace tcm {

inline constexpr uint64_t kSplitMixGamma = 0x9e3779b97f4a7c15ULL;

// One step of the SplitMix64 generator from state `x`: its output.
constexpr uint64_t SplitMix64(uint64_t x) {
  x += kSplitMixGamma;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace tcm

#endif  // TCM_COMMON_SPLITMIX_H_
