#include "server/server_options.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace tcm {

absl::Status CheckServerOptions(const ServerOptions& o) {
  struct Range {
    const char* name;
    double value, low, high;
  };
  constexpr double kNoLimit = 1e18;
  const Range ranges[] = {
      {"port", double(o.port), 0, 65535},
      {"metrics_port", double(o.metrics_port), -1, 65535},
      {"workers", double(o.workers), 1, 1024},
      {"intra_op_threads", double(o.intra_op_threads), 0, 1024},
      {"max_batch_size", double(o.max_batch_size), 1, 65536},
      {"max_queue_delay_us", double(o.max_queue_delay_us), 0, 60e6},  // as batching.max_queue_delay_us
      {"max_queue_size", double(o.max_queue_size), 1, kNoLimit},
      {"max_images_per_request", double(o.max_images_per_request), 1, 1 << 20},
      {"warmup_batch_size", double(o.warmup_batch_size), 1, 65536},
      {"drain_timeout", o.drain_timeout, 0, kNoLimit},
      {"max_connection_age_s", double(o.max_connection_age_s), 0, kNoLimit},
      {"max_message_mb", double(o.max_message_mb), 1, 2047},
  };
  for (const Range& r : ranges) {
    if (r.value >= r.low && r.value <= r.high) continue;
    return absl::InvalidArgumentError(
        r.high == kNoLimit
            ? absl::StrFormat("--%s: must be at least %.15g, got %.15g", r.name, r.low, r.value)
            : absl::StrFormat("--%s: must be in [%.15g, %.15g], got %.15g", r.name, r.low, r.high, r.value));
  }
  if (o.device != "cpu" && o.device != "cuda")
    return absl::InvalidArgumentError(absl::StrCat("--device: must be cpu or cuda, got ", o.device));
  return absl::OkStatus();
}

absl::StatusOr<Batcher::ModelQueueOptions> MergeQueueOptions(const std::string& name, const v1::ModelConfig& config,
                                                             bool steps_share_network, const ServerOptions& options) {
  const auto& b = config.batching();
  Batcher::ModelQueueOptions q;
  q.name = name;
  q.max_batch_size = b.has_max_batch_size() ? b.max_batch_size() : static_cast<size_t>(options.max_batch_size);
  q.max_queue_delay = absl::Microseconds(b.has_max_queue_delay_us() ? static_cast<int64_t>(b.max_queue_delay_us())
                                                                    : options.max_queue_delay_us);
  q.max_queue_size = b.has_max_queue_size() ? b.max_queue_size() : static_cast<size_t>(options.max_queue_size);
  if (q.max_batch_size < 1)
    return absl::InvalidArgumentError(
        absl::StrCat("model '", name, "': batching.max_batch_size must be at least 1, got 0"));
  if (q.max_queue_size < q.max_batch_size)
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", name, "': its queue (max_queue_size ", q.max_queue_size, ", ",
        b.has_max_queue_size() ? "batching.max_queue_size" : "--max_queue_size", ") must hold a whole batch (",
        q.max_batch_size, ", ", b.has_max_batch_size() ? "batching.max_batch_size" : "--max_batch_size", ")"));
  q.mix_steps = options.step_level_batching && steps_share_network;
  q.mix_kinds = options.step_level_batching;
  return q;
}

absl::StatusOr<int> DefaultModelIndex(const std::vector<std::string>& names, const std::string& default_model) {
  if (default_model.empty()) return 0;
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == default_model) return static_cast<int>(i);
  return absl::NotFoundError(absl::StrCat("--default_model: no model named '", default_model, "' (available: ",
                                          absl::StrJoin(names, ", "), ")"));
}

}  // namespace tcm
