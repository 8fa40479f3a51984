#include "server/server_flags.h"

#include <cstdint>
#include <string>

#include "absl/flags/flag.h"

// Every default comes from ServerOptions.
ABSL_FLAG(int, port, tcm::ServerOptions().port, "gRPC port (on --grpc_address); 0 = any free port (printed).");
ABSL_FLAG(int, metrics_port, tcm::ServerOptions().metrics_port,
          "Prometheus metrics port: http://HOST:PORT/metrics; -1 = none, 0 = any free port (printed).");
ABSL_FLAG(int, http_port, tcm::ServerOptions().http_port,
          "HTTP port of the Open Inference Protocol's REST form (/v2/...), the playground page (/), its image "
          "stream (/v1/models/...) and /metrics; opens after warm-up; HTTPS with --tls_cert; -1 = none, 0 = any "
          "free port (printed).");
ABSL_FLAG(std::string, grpc_address, tcm::ServerOptions().grpc_address,
          "Address of the gRPC port: an IPv4 or IPv6 literal (0.0.0.0, ::1, ...); empty = every address, IPv4 and "
          "IPv6.");
ABSL_FLAG(std::string, http_address, tcm::ServerOptions().http_address,
          "Address of the HTTP listeners (--http_port, --metrics_port): an IPv4 or IPv6 literal; empty = every "
          "address, IPv4 and "
          "IPv6.");
ABSL_FLAG(int, http_max_connections_per_ip, tcm::ServerOptions().http_max_connections_per_ip,
          "Most connections one IP address may hold open on each HTTP listener, of 1024 in all, so that one caller "
          "cannot take every slot; 0 = no limit of its own. Behind a proxy or a mesh sidecar every connection comes "
          "from its address: raise it or set 0 there.");
ABSL_FLAG(std::string, model_repository, tcm::ServerOptions().model_repository,
          "Folder of model directories; every one is served.");
ABSL_FLAG(std::string, default_model, tcm::ServerOptions().default_model,
          "Model served when a request names none; empty = the first model by name.");
ABSL_FLAG(std::string, device, tcm::ServerOptions().device,
          "cpu, or cuda (one worker per visible GPU, or instance.count per GPU; needs a CUDA build).");
ABSL_FLAG(std::string, precision, tcm::ServerOptions().precision,
          "The network's arithmetic for models whose config leaves instance.precision unset: auto (bf16 on CPUs "
          "with native bf16, fp16 on GPUs, else fp32), fp32, bf16 or fp16 (GPUs only).");
ABSL_FLAG(int, workers, tcm::ServerOptions().workers,
          "CPU workers, each with its own replica of every model it runs (a config's instance.count may "
          "limit a model to the first N).");
ABSL_FLAG(int, intra_op_threads, tcm::ServerOptions().intra_op_threads,
          "LibTorch threads per CPU worker; 0 = cores / workers. A batch of at least two images per thread "
          "runs as one shard per thread.");
ABSL_FLAG(int, compute_nice, tcm::ServerOptions().compute_nice,
          "Nice increment (0..19) of the workers and their intra-op threads, so that the threads that accept, "
          "refuse and answer calls and health checks get a core at once while every core computes. 0: the "
          "workers run at the server's own priority.");
ABSL_FLAG(int, max_batch_size, tcm::ServerOptions().max_batch_size,
          "Images per forward pass, unless a model's config.pbtxt sets batching.max_batch_size.");
ABSL_FLAG(int64_t, max_queue_delay_us, tcm::ServerOptions().max_queue_delay_us,
          "Longest wait for a fuller batch when a worker is idle, microseconds, unless the model's config.pbtxt "
          "sets it. 0: an idle worker takes what is queued at once (under load batches fill while workers are busy).");
ABSL_FLAG(int, max_queue_size, tcm::ServerOptions().max_queue_size,
          "Queued images per model and priority level before calls get RESOURCE_EXHAUSTED, unless the config sets it; "
          "must hold a whole batch (max_batch_size), or the server refuses to start.");
ABSL_FLAG(bool, step_level_batching, tcm::ServerOptions().step_level_batching,
          "Let images of 1- and 2-step requests, at their first and second step, share forward passes. "
          "false batches 1-step and 2-step requests separately and second steps in passes of their own, as two "
          "separate batchers would (the baseline step-level batching is measured against). "
          "Composed models (config transition_t between mid_t and t_max) always run the two steps apart.");
ABSL_FLAG(bool, deadline_aware_batching, tcm::ServerOptions().deadline_aware_batching,
          "Serve each model's queue earliest deadline first (calls without a deadline by arrival), and drop "
          "before compute every queued image that could not finish before its call's deadline even if computed "
          "at once, by the pass time measured at warm-up and while serving (tcm_images_dropped_total "
          "reason deadline_unmeetable; the call ends DEADLINE_EXCEEDED at once). false: first come, first served, "
          "and images are dropped only once their deadline has passed.");
ABSL_FLAG(int, priority_levels, tcm::ServerOptions().priority_levels,
          "Priority levels (1..16) of every model whose config sets no batching.priority_levels: a request's "
          "priority may be 1 (the highest) to this; a batch is filled from the highest level first, and each "
          "level has a queue of max_queue_size images of its own.");
ABSL_FLAG(int, default_priority_level, tcm::ServerOptions().default_priority_level,
          "Level of a request with priority 0, unless a model's config sets batching.default_priority_level; "
          "0 = the lowest level.");
ABSL_FLAG(std::string, model_control, tcm::ServerOptions().model_control,
          "Models added, replaced and removed without a restart: none (the repository is read once at start), "
          "poll (every --repository_poll_s a new model directory is loaded, a changed one (config, weights or "
          "labels) reloaded as a new version, a removed one unloaded) or explicit (the LoadModel and UnloadModel "
          "calls of tcm.v1.TcmService do it for one model). A reload builds and warms up the new version beside "
          "the old one, so for a moment both are in memory. CPU only.");
ABSL_FLAG(double, repository_poll_s, tcm::ServerOptions().repository_poll_s,
          "Seconds between reads of the model repository with --model_control=poll (0.05 to 86400).");
ABSL_FLAG(int, cache_mb, tcm::ServerOptions().cache_mb,
          "Exact response cache, MiB (0 = off). A seeded image is a function of (model, class, steps, seed, "
          "index, format), so calls that name their seed are looked up image by image and served from the cache "
          "without queue or compute; least recently used images go first. A model's config can opt out with "
          "caching { enable: false }. Calls without a seed never hit.");
ABSL_FLAG(int, max_images_per_request, tcm::ServerOptions().max_images_per_request,
          "Largest num_images a call may ask for; a model's max_queue_size caps it too.");
ABSL_FLAG(int, max_open_calls, tcm::ServerOptions().max_open_calls,
          "Generation calls (gRPC, Open Inference Protocol, REST) the server holds at once: a gRPC call from its "
          "start until its answer is sent, a REST call until its images are done; one more is refused "
          "RESOURCE_EXHAUSTED (HTTP 429). A gRPC caller that stops reading keeps its call and its finished images "
          "here, so this bounds what such callers can hold (REST's, by the HTTP connection limit). 0 = no limit.");
ABSL_FLAG(int, warmup_batch_size, tcm::ServerOptions().warmup_batch_size,
          "Images in the warm-up batch each worker runs per model before serving.");
ABSL_FLAG(double, drain_timeout, tcm::ServerOptions().drain_timeout,
          "Seconds queued work may take to finish after SIGTERM.");
ABSL_FLAG(int, max_connection_age_s, tcm::ServerOptions().max_connection_age_s,
          "Seconds after which a client connection is asked to reconnect (GOAWAY), so long-lived callers "
          "spread over new replicas; 0 = never, at most 2147483 (about 24.8 days: gRPC takes it in milliseconds "
          "as a 32-bit int).");
ABSL_FLAG(int, max_message_mb, tcm::ServerOptions().max_message_mb,
          "Largest gRPC message sent, MiB (a response's images); requests received are capped at 4 MiB or this, "
          "whichever is smaller.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM server certificate chain; with --tls_key turns on TLS on the gRPC port and --http_port "
          "(--metrics_port stays plain HTTP).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle; when set, clients must present a certificate it signed (mTLS; on --http_port a request "
          "without one is answered 403).");
ABSL_FLAG(std::string, access_log, tcm::ServerOptions().access_log,
          "Where to write one JSON line per call, gRPC and HTTP (time, peer, protocol, method, model, steps, "
          "images, status, queue/compute/total seconds): empty = nowhere, \"-\" = stderr, else a file, appended.");

namespace tcm {

ServerOptions ServerOptionsFromFlags() {
  ServerOptions o;
  o.port = absl::GetFlag(FLAGS_port);
  o.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  o.http_port = absl::GetFlag(FLAGS_http_port);
  o.grpc_address = absl::GetFlag(FLAGS_grpc_address);
  o.http_address = absl::GetFlag(FLAGS_http_address);
  o.http_max_connections_per_ip = absl::GetFlag(FLAGS_http_max_connections_per_ip);
  o.model_repository = absl::GetFlag(FLAGS_model_repository);
  o.default_model = absl::GetFlag(FLAGS_default_model);
  o.device = absl::GetFlag(FLAGS_device);
  o.precision = absl::GetFlag(FLAGS_precision);
  o.workers = absl::GetFlag(FLAGS_workers);
  o.intra_op_threads = absl::GetFlag(FLAGS_intra_op_threads);
  o.compute_nice = absl::GetFlag(FLAGS_compute_nice);
  o.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  o.max_queue_delay_us = absl::GetFlag(FLAGS_max_queue_delay_us);
  o.max_queue_size = absl::GetFlag(FLAGS_max_queue_size);
  o.step_level_batching = absl::GetFlag(FLAGS_step_level_batching);
  o.deadline_aware_batching = absl::GetFlag(FLAGS_deadline_aware_batching);
  o.priority_levels = absl::GetFlag(FLAGS_priority_levels);
  o.default_priority_level = absl::GetFlag(FLAGS_default_priority_level);
  o.max_images_per_request = absl::GetFlag(FLAGS_max_images_per_request);
  o.max_open_calls = absl::GetFlag(FLAGS_max_open_calls);
  o.warmup_batch_size = absl::GetFlag(FLAGS_warmup_batch_size);
  o.cache_mb = absl::GetFlag(FLAGS_cache_mb);
  o.model_control = absl::GetFlag(FLAGS_model_control);
  o.repository_poll_s = absl::GetFlag(FLAGS_repository_poll_s);
  o.drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  o.max_connection_age_s = absl::GetFlag(FLAGS_max_connection_age_s);
  o.max_message_mb = absl::GetFlag(FLAGS_max_message_mb);
  o.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  o.tls_key = absl::GetFlag(FLAGS_tls_key);
  o.tls_client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  o.access_log = absl::GetFlag(FLAGS_access_log);
  return o;
}

}  // namespace tcm
