// tcm-bench --raw: the model's own throughput in this process, no server, so
// that the service's numbers can be read against the model's in one run.
// Torch-free header; the LibTorch code is in load_raw.cc.
#ifndef TCM_CLIENT_LOAD_RAW_H_
#define TCM_CLIENT_LOAD_RAW_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tcm {
namespace load {

struct RawOptions {
  std::string model_dir;
  int batch_size = 0;  // 0 = the model's batching.max_batch_size, else 16 (the server's default)
  double two_step_fraction = 0.5;
  bool png = true;           // encode each finished image as PNG (as the server does)
  int64_t class_label = -1;  // -1 = a class per image drawn from its seed
  uint64_t seed = 1;
  double seconds = 3;  // least timed duration of each measurement
  int threads = 0;     // LibTorch intra-op threads; 0 = one per core
};

struct RawCase {
  std::string name;  // "1-step", "2-step", "mix 0.50"
  double two_step_fraction = 0;
  int batch_size = 0;
  int64_t passes = 0;        // forward passes timed at batch_size
  int64_t images = 0;        // images finished in them
  double seconds = 0;        // their duration
  double images_per_s = 0;   // images / seconds
  double ms_per_pass = 0;    // seconds / passes
  int64_t single_count = 0;  // single images timed at batch 1
  double single_p50_ms = 0;  // their median latency
};

struct RawReport {
  std::string model;  // name, architecture, size
  int threads = 0;
  std::vector<RawCase> cases;
};

// Builds one replica of the model directory and, for 1-step, 2-step and the
// `two_step_fraction` mix, times:
//   - throughput at `batch_size`: full sampling as the server's step-level
//     batcher does it. Each forward pass takes the second steps left by the
//     pass before (ahead of new work, as the server's queue does) and fills
//     up with new images, every row with its own sigma; an image's cost is
//     its noise (StepInput), its rows of the forward pass (InferenceMode),
//     ToPixels, and EncodePng when `png`. The run stops taking new images
//     after `seconds` and finishes the ones in flight, so every timed image is
//     complete.
//   - latency at batch 1: one image at a time, median over at least 5 and
//     `seconds`' worth.
absl::StatusOr<RawReport> RunRaw(const RawOptions& options);

std::string RawTable(const RawReport& report);
nlohmann::json ToJson(const RawReport& report);

}  // namespace load
}  // namespace tcm

#endif  // TCM_CLIENT_LOAD_RAW_H_
