#include "server/server_options.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdio>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "model/model_config.h"
#include "server/access_log_hooks.h"

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
      {"http_port", double(o.http_port), -1, 65535},
      {"http_max_connections_per_ip", double(o.http_max_connections_per_ip), 0, 1024},
      {"workers", double(o.workers), 1, 1024},
      {"intra_op_threads", double(o.intra_op_threads), 0, 1024},
      {"compute_nice", double(o.compute_nice), 0, 19},
      {"priority_levels", double(o.priority_levels), 1, 16},
      {"default_priority_level", double(o.default_priority_level), 0, 16},
      {"max_batch_size", double(o.max_batch_size), 1, 65536},
      {"max_queue_delay_us", double(o.max_queue_delay_us), 0, 60e6},  // as batching.max_queue_delay_us
      {"max_queue_size", double(o.max_queue_size), 1, kNoLimit},
      {"max_images_per_request", double(o.max_images_per_request), 1, 1 << 20},
      {"max_open_calls", double(o.max_open_calls), 0, 1 << 24},
      {"warmup_batch_size", double(o.warmup_batch_size), 1, 65536},
      {"cache_mb", double(o.cache_mb), 0, 1 << 20},
      {"drain_timeout", o.drain_timeout, 0, kNoLimit},
      {"repository_poll_s", o.repository_poll_s, 0.05, 86400},
      // gRPC takes the age in milliseconds as an int: above this it would wrap.
      {"max_connection_age_s", double(o.max_connection_age_s), 0, double(kMaxConnectionAgeS)},
      {"max_message_mb", double(o.max_message_mb), 1, 2047},
  };
  for (const Range& r : ranges) {
    if (r.value >= r.low && r.value <= r.high) continue;
    return absl::InvalidArgumentError(
        r.high == kNoLimit
            ? absl::StrFormat("--%s: must be at least %.15g, got %.15g", r.name, r.low, r.value)
            : absl::StrFormat("--%s: must be in [%.15g, %.15g], got %.15g", r.name, r.low, r.high, r.value));
  }
  for (const auto& [flag, address] : {std::pair{"grpc_address", &o.grpc_address}, {"http_address", &o.http_address}}) {
    in6_addr parsed;
    if (address->empty() || inet_pton(AF_INET, address->c_str(), &parsed) == 1 ||
        inet_pton(AF_INET6, address->c_str(), &parsed) == 1)
      continue;
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": must be an IPv4 or IPv6 address (0.0.0.0, ::, ",
                                                   "127.0.0.1, ::1, ...) or empty for every address, got '", *address,
                                                   "'"));
  }
  if (o.device != "cpu" && o.device != "cuda")
    return absl::InvalidArgumentError(absl::StrCat("--device: must be cpu or cuda, got ", o.device));
  if (o.precision != "auto" && o.precision != "fp32" && o.precision != "bf16" && o.precision != "fp16")
    return absl::InvalidArgumentError(absl::StrCat("--precision: must be auto, fp32, bf16 or fp16, got ", o.precision));
  if (o.model_control != "none" && o.model_control != "poll" && o.model_control != "explicit")
    return absl::InvalidArgumentError(
        absl::StrCat("--model_control: must be none, poll or explicit, got ", o.model_control));
  if (o.model_control != "none" && o.device != "cpu")
    return absl::InvalidArgumentError(
        absl::StrCat("--model_control: ", o.model_control, " needs --device cpu; on cuda only none is supported"));
  return absl::OkStatus();
}

int MaxConnectionAgeMs(const ServerOptions& o) {
  const int64_t ms = int64_t{o.max_connection_age_s} * 1000;
  return static_cast<int>(std::clamp<int64_t>(ms, 0, std::numeric_limits<int>::max()));
}

std::string GrpcListenAddress(const ServerOptions& o) {
  if (o.grpc_address.empty()) return absl::StrCat("[::]:", o.port);  // gRPC falls back to IPv4 where IPv6 is off
  if (o.grpc_address.find(':') != std::string::npos) return absl::StrCat("[", o.grpc_address, "]:", o.port);
  return absl::StrCat(o.grpc_address, ":", o.port);
}

HttpServer::Options RestListener(const ServerOptions& o, const TlsPem& tls, AccessLog* access_log) {
  HttpServer::Options listener;
  listener.address = o.http_address;
  listener.port = o.http_port;
  listener.max_connections_per_peer = static_cast<unsigned>(o.http_max_connections_per_ip);
  listener.flag_name = "--http_port";  // the default body limit: an infer request is small
  listener.tls_cert_pem = tls.cert;
  listener.tls_key_pem = tls.key;
  listener.tls_client_ca_pem = tls.client_ca;
  if (access_log != nullptr) listener.on_complete = HttpAccessLogger(access_log);
  return listener;
}

HttpServer::Options MetricsListener(const ServerOptions& o, AccessLog* access_log) {
  HttpServer::Options listener;
  listener.address = o.http_address;
  listener.port = o.metrics_port;
  listener.max_connections_per_peer = static_cast<unsigned>(o.http_max_connections_per_ip);
  listener.flag_name = "--metrics_port";
  if (access_log != nullptr) listener.on_complete = HttpAccessLogger(access_log);
  return listener;
}

absl::Status ApplyPrecision(const std::string& name, v1::ModelConfig* config, const ServerOptions& options,
                            bool native_bf16) {
  auto resolved = ResolvePrecision(name, *config, options, native_bf16);
  if (!resolved.ok()) return resolved.status();
  if (!resolved->note.empty()) std::fprintf(stderr, "tcm-server: %s\n", resolved->note.c_str());
  config->mutable_instance()->set_precision(resolved->precision);
  return absl::OkStatus();
}

const char* PrecisionName(v1::InstanceConfig::Precision precision) {
  switch (precision) {
    case v1::InstanceConfig::PRECISION_BF16:
      return "bf16";
    case v1::InstanceConfig::PRECISION_FP16:
      return "fp16";
    default:
      return "fp32";
  }
}

absl::StatusOr<ResolvedPrecision> ResolvePrecision(const std::string& name, const v1::ModelConfig& config,
                                                   const ServerOptions& options, bool native_bf16) {
  using P = v1::InstanceConfig;
  const bool cuda = options.device == "cuda";
  P::Precision asked = config.instance().precision();
  const bool from_flag = asked == P::PRECISION_DEFAULT;
  const std::string source = absl::StrCat("model '", name, "': ", from_flag ? "--precision" : "instance.precision");
  if (from_flag) {
    if (options.precision == "auto") {
      ResolvedPrecision auto_choice;
      auto_choice.precision = cuda ? P::PRECISION_FP16 : native_bf16 ? P::PRECISION_BF16 : P::PRECISION_FP32;
      return auto_choice;
    }
    asked = options.precision == "bf16"   ? P::PRECISION_BF16
            : options.precision == "fp16" ? P::PRECISION_FP16
                                          : P::PRECISION_FP32;
  }
  ResolvedPrecision resolved;
  resolved.precision = asked;
  if (cuda) return resolved;
  if (asked == P::PRECISION_FP16)
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": fp16 runs on GPUs only (--device=cuda); on the CPU use bf16 or fp32"));
  if (asked == P::PRECISION_BF16 && !native_bf16) {
    resolved.precision = P::PRECISION_FP32;
    resolved.note = absl::StrCat(source,
                                 " asks for bf16, but this CPU has no native bf16 (avx512_bf16 or amx_bf16): "
                                 "running fp32");
  }
  return resolved;
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
  // Reading a config checks its own batch size, or one image where it sets
  // none; the batch size this server runs it at is checked here.
  if (absl::Status fits = CheckBatchActivations(
          config, q.max_batch_size, b.has_max_batch_size() ? "batching.max_batch_size" : "--max_batch_size");
      !fits.ok())
    return absl::InvalidArgumentError(absl::StrCat("model '", name, "': ", fits.message()));
  if (q.max_queue_size < q.max_batch_size)
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", name, "': its queue (max_queue_size ", q.max_queue_size, ", ",
        b.has_max_queue_size() ? "batching.max_queue_size" : "--max_queue_size", ") must hold a whole batch (",
        q.max_batch_size, ", ", b.has_max_batch_size() ? "batching.max_batch_size" : "--max_batch_size", ")"));
  const char* levels_source = b.has_priority_levels() ? "batching.priority_levels" : "--priority_levels";
  const int levels = b.has_priority_levels() ? static_cast<int>(b.priority_levels()) : options.priority_levels;
  if (levels < 1)
    return absl::InvalidArgumentError(
        absl::StrCat("model '", name, "': ", levels_source, " must be at least 1, got ", levels));
  const char* default_source =
      b.has_default_priority_level() ? "batching.default_priority_level" : "--default_priority_level";
  const int default_level =
      b.has_default_priority_level() ? static_cast<int>(b.default_priority_level()) : options.default_priority_level;
  if (default_level > levels)
    return absl::InvalidArgumentError(absl::StrCat("model '", name, "': ", default_source, " (", default_level,
                                                   ") must be at most its priority levels (", levels, ", ",
                                                   levels_source, "); 0 = the lowest"));
  q.priority_levels = levels;
  q.default_priority_level = default_level == 0 ? levels : default_level;
  q.mix_steps = options.step_level_batching && steps_share_network;
  q.mix_kinds = options.step_level_batching;
  q.deadline_aware = options.deadline_aware_batching;
  return q;
}

absl::StatusOr<int> DefaultModelIndex(const std::vector<std::string>& names, const std::string& default_model) {
  if (default_model.empty()) return 0;
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == default_model) return static_cast<int>(i);
  return absl::NotFoundError(absl::StrCat("--default_model: no model named '", default_model,
                                          "' (available: ", absl::StrJoin(names, ", "), ")"));
}

}  // namespace tcm
