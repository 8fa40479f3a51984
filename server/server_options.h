// tcm-server's settings in one tested place: ServerOptions holds every flag
// (its member initialisers are the flags' defaults, the only ones), their
// ranges are checked here, and each model's batching is merged here with
// them: a model's config.pbtxt sets its own queue, a field it leaves unset
// takes the flag. Torch-free.
#ifndef TCM_SERVER_SERVER_OPTIONS_H_
#define TCM_SERVER_SERVER_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/batching_defaults.h"
#include "server/access_log.h"
#include "server/batcher.h"
#include "server/http_server.h"
#include "server/server_credentials.h"
#include "tcm/v1/model_config.pb.h"

namespace tcm {

struct ServerOptions {
  int port = 50051;
  int metrics_port = 9464;  // -1 = none
  int http_port = 8000;     // the Open Inference Protocol's REST form; -1 = none
  // Listening addresses: "" = every address, IPv4 and IPv6; else one IPv4 or IPv6 literal.
  std::string grpc_address;
  std::string http_address;
  // Most connections one IP address may hold open on each HTTP listener (of
  // at most 1024 in all); 0 = no limit of its own.
  int http_max_connections_per_ip = 256;
  std::string model_repository = "models";
  // Models added, replaced and removed while serving: none, poll (the
  // repository is read every repository_poll_s) or explicit (LoadModel and
  // UnloadModel calls).
  std::string model_control = "none";
  double repository_poll_s = 5;
  std::string default_model;  // empty = the first model by name
  std::string device = "cpu";
  // The network's arithmetic for models whose instance.precision is DEFAULT:
  // auto (bf16 where the CPU has native bf16, fp16 on GPUs, else fp32), fp32,
  // bf16 or fp16.
  std::string precision = "auto";
  int workers = 1;
  int intra_op_threads = 0;  // 0 = cores / workers
  int compute_nice = 10;     // nice increment of the compute threads; 0 = none
  int max_batch_size = static_cast<int>(kDefaultMaxBatchSize);
  int64_t max_queue_delay_us = static_cast<int64_t>(kDefaultMaxQueueDelayUs);
  int max_queue_size = static_cast<int>(kDefaultMaxQueueSize);
  bool step_level_batching = true;
  bool deadline_aware_batching = true;  // earliest deadline first; unmeetable images dropped before compute
  int priority_levels = 2;              // request priorities 1 (highest) ..priority_levels, unless a config sets them
  int default_priority_level = 0;       // level of a request with priority 0; 0 = the lowest
  int max_images_per_request = 64;
  int max_open_calls = 1024;  // generation calls held at once, all front ends; 0 = no limit
  int warmup_batch_size = 1;
  int cache_mb = 0;              // exact response cache, MiB; 0 = off
  double drain_timeout = 30;     // seconds
  int max_connection_age_s = 0;  // 0 = never; at most kMaxConnectionAgeS
  int max_message_mb = 64;
  std::string tls_cert, tls_key, tls_client_ca;
  std::string access_log;  // "" = none, "-" = stderr, else a file (appended)
};

// The largest --max_connection_age_s: gRPC takes the age as an int of
// milliseconds (GRPC_ARG_MAX_CONNECTION_AGE_MS), about 24.8 days at most.
inline constexpr int kMaxConnectionAgeS = 2147483;

// --max_connection_age_s in milliseconds for GRPC_ARG_MAX_CONNECTION_AGE_MS,
// computed in 64 bits and clamped to [0, INT_MAX]: never wrapped negative
// (which would make gRPC close every connection at once).
int MaxConnectionAgeMs(const ServerOptions& options);

// The gRPC listening address for --grpc_address and --port ("[::]:50051" for every address).
std::string GrpcListenAddress(const ServerOptions& options);

// The HTTP listeners on --http_address: --metrics_port and --http_port (port
// -1: not started), writing to `access_log` (nullptr = none).
HttpServer::Options MetricsListener(const ServerOptions& options, AccessLog* access_log);
// --http_port speaks TLS with `tls` where it is enabled (the server's certificate flags).
HttpServer::Options RestListener(const ServerOptions& options, const TlsPem& tls, AccessLog* access_log);

// The first numeric setting outside its range, as "--NAME: must be ...";
// also --device, --precision and the listening addresses.
absl::Status CheckServerOptions(const ServerOptions& options);

// The queue of model `name`: its config's batching where set, the options'
// flags elsewhere. `steps_share_network`: one network runs both sampling
// steps (a composed model's steps are batched apart). An unusable result (a
// queue smaller than a batch, a zero batch size) is an error naming the
// model and the field.
absl::StatusOr<Batcher::ModelQueueOptions> MergeQueueOptions(const std::string& name, const v1::ModelConfig& config,
                                                             bool steps_share_network, const ServerOptions& options);

// The precision model `name` runs in: its config's instance.precision, or
// --precision where that is DEFAULT, resolved for the device (`cuda`) and
// the CPU (`native_bf16`): never DEFAULT. bf16 on a CPU without native bf16
// runs fp32 and says so in `note` (one log line); fp16 on the CPU is an error
// naming the model and the field (or the flag).
struct ResolvedPrecision {
  v1::InstanceConfig::Precision precision = v1::InstanceConfig::PRECISION_FP32;
  std::string note;  // empty unless the model's or the flag's request was changed
};
absl::StatusOr<ResolvedPrecision> ResolvePrecision(const std::string& name, const v1::ModelConfig& config,
                                                   const ServerOptions& options, bool native_bf16);

// Sets `config`'s instance.precision to the resolved one; a note goes to
// stderr as one "tcm-server: ..." line.
absl::Status ApplyPrecision(const std::string& name, v1::ModelConfig* config, const ServerOptions& options,
                            bool native_bf16);

// "fp32", "bf16" or "fp16"; DEFAULT (unresolved) runs fp32, so "fp32".
const char* PrecisionName(v1::InstanceConfig::Precision precision);

// Index in `names` of --default_model (empty: 0), or NOT_FOUND listing the names.
absl::StatusOr<int> DefaultModelIndex(const std::vector<std::string>& names, const std::string& default_model);

}  // namespace tcm

#endif  // TCM_SERVER_SERVER_OPTIONS_H_
