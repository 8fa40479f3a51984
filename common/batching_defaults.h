// A model's batching when neither its config.pbtxt nor a tcm-server flag
// sets it: the one source of these defaults for the server's flags, the
// batcher and tcm-bench --raw.
#ifndef TCM_COMMON_BATCHING_DEFAULTS_H_
#define TCM_COMMON_BATCHING_DEFAULTS_H_

#include <cstdint>

namespace tcm {

inline constexpr uint32_t kDefaultMaxBatchSize = 16;    // images per forward pass
inline constexpr uint64_t kDefaultMaxQueueDelayUs = 0;  // an idle worker takes what is queued at once
inline constexpr uint32_t kDefaultMaxQueueSize = 256;   // queued images before RESOURCE_EXHAUSTED

}  // namespace tcm

#endif  // TCM_COMMON_BATCHING_DEFAULTS_H_
