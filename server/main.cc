// tcm-server: serves every model of a model repository over gRPC
// (tcm.v1.TcmService, grpc.health.v1, reflection) with Prometheus metrics.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/flags_usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/read_file.h"
#include "model/model_repository.h"
#include "model/sampler.h"
#include "server/batcher.h"
#include "server/health_service.h"
#include "server/metrics.h"
#include "server/metrics_http.h"
#include "server/tcm_service.h"
#include "server/worker_pool.h"

ABSL_FLAG(int, port, 50051, "gRPC port (all interfaces); 0 = any free port (printed).");
ABSL_FLAG(int, metrics_port, 9464, "Prometheus metrics port: http://HOST:PORT/metrics; -1 = none, 0 = any free port (printed).");
ABSL_FLAG(std::string, model_repository, "models", "Folder of model directories; every one is served.");
ABSL_FLAG(std::string, default_model, "",
          "Model served when a request names none; empty = the first model by name.");
ABSL_FLAG(std::string, device, "cpu", "cpu, or cuda (one worker per visible GPU; needs a CUDA build).");
ABSL_FLAG(int, workers, 1,
          "CPU workers, each with its own replica of every model it runs (a config's instance.count may "
          "limit a model to the first N).");
ABSL_FLAG(int, intra_op_threads, 0, "LibTorch threads per CPU worker; 0 = cores / workers.");
ABSL_FLAG(int, max_batch_size, 16, "Images per forward pass, unless a model's config.pbtxt sets batching.");
ABSL_FLAG(int, max_queue_delay_us, 0,
          "Longest wait for a fuller batch when a worker is idle, microseconds, unless the model's config.pbtxt "
          "sets it. 0: an idle worker takes what is queued at once (under load batches fill while workers are busy).");
ABSL_FLAG(int, max_queue_size, 256,
          "Queued images per model before calls get RESOURCE_EXHAUSTED, unless the config sets it.");
ABSL_FLAG(bool, step_level_batching, true,
          "Let images of 1- and 2-step requests, at their first and second step, share forward passes. "
          "false batches 1-step and 2-step requests separately and second steps in passes of their own, as two "
          "separate batchers would (the baseline step-level batching is measured against). "
          "Composed models (config transition_t between mid_t and t_max) always run the two steps apart.");
ABSL_FLAG(int, max_images_per_request, 64,
          "Largest num_images a call may ask for; a model's max_queue_size caps it too.");
ABSL_FLAG(int, warmup_batch_size, 1, "Images in the warm-up batch each worker runs per model before serving.");
ABSL_FLAG(double, drain_timeout, 30, "Seconds queued work may take to finish after SIGTERM.");
ABSL_FLAG(int, max_connection_age_s, 0,
          "Seconds after which a client connection is asked to reconnect (GOAWAY), so long-lived callers "
          "spread over new replicas; 0 = never.");
ABSL_FLAG(int, max_message_mb, 64, "Largest gRPC message received or sent, MiB.");
ABSL_FLAG(std::string, tls_cert, "", "PEM server certificate chain; with --tls_key turns on TLS.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "", "PEM CA bundle; when set, clients must present a certificate it signed (mTLS).");

namespace tcm {
namespace {

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials() {
  const std::string cert = absl::GetFlag(FLAGS_tls_cert), key = absl::GetFlag(FLAGS_tls_key),
                    ca = absl::GetFlag(FLAGS_tls_client_ca);
  if (cert.empty() && key.empty() && ca.empty()) return grpc::InsecureServerCredentials();
  if (cert.empty() != key.empty())
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together: give both or neither");
  if (cert.empty()) return absl::InvalidArgumentError("--tls_client_ca: needs --tls_cert and --tls_key (mutual TLS)");
  grpc::SslServerCredentialsOptions options;
  auto cert_text = ReadFlagFile(cert, "tls_cert");
  if (!cert_text.ok()) return cert_text.status();
  auto key_text = ReadFlagFile(key, "tls_key");
  if (!key_text.ok()) return key_text.status();
  options.pem_key_cert_pairs.push_back({*key_text, *cert_text});
  if (!ca.empty()) {
    auto ca_text = ReadFlagFile(ca, "tls_client_ca");
    if (!ca_text.ok()) return ca_text.status();
    options.pem_root_certs = *ca_text;
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

// Per-model batching: config.pbtxt values win over the flags.
Batcher::ModelQueueOptions QueueOptions(const ModelDirectory& model) {
  const auto& b = model.config.batching();
  Batcher::ModelQueueOptions q;
  q.name = model.name;
  q.max_batch_size = b.max_batch_size() ? b.max_batch_size() : absl::GetFlag(FLAGS_max_batch_size);
  q.max_queue_delay = absl::Microseconds(b.max_queue_delay_us() ? static_cast<int64_t>(b.max_queue_delay_us())
                                                                : absl::GetFlag(FLAGS_max_queue_delay_us));
  q.max_queue_size = b.max_queue_size() ? b.max_queue_size() : absl::GetFlag(FLAGS_max_queue_size);
  q.max_queue_size = std::max(q.max_queue_size, q.max_batch_size);
  // A composed model (TCM's stage 2 over stage 1) runs its two steps on
  // different networks, so a mixed batch would split into two smaller passes:
  // its steps are batched apart.
  q.mix_steps = absl::GetFlag(FLAGS_step_level_batching) && StepsShareNetwork(model.config);
  q.mix_kinds = absl::GetFlag(FLAGS_step_level_batching);
  return q;
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "tcm-server: %s\n", std::string(status.message()).c_str());
  return 1;
}

// Numeric flags outside their range: an error naming the flag and the range.
absl::Status CheckFlagRanges() {
  struct Range {
    const char* name;
    double value, low, high;
  };
  constexpr double kNoLimit = 1e18;
  const Range ranges[] = {
      {"port", double(absl::GetFlag(FLAGS_port)), 0, 65535},
      {"metrics_port", double(absl::GetFlag(FLAGS_metrics_port)), -1, 65535},
      {"workers", double(absl::GetFlag(FLAGS_workers)), 1, 1024},
      {"intra_op_threads", double(absl::GetFlag(FLAGS_intra_op_threads)), 0, 1024},
      {"max_batch_size", double(absl::GetFlag(FLAGS_max_batch_size)), 1, 65536},
      {"max_queue_delay_us", double(absl::GetFlag(FLAGS_max_queue_delay_us)), 0, kNoLimit},
      {"max_queue_size", double(absl::GetFlag(FLAGS_max_queue_size)), 1, kNoLimit},
      {"max_images_per_request", double(absl::GetFlag(FLAGS_max_images_per_request)), 1, 1 << 20},
      {"warmup_batch_size", double(absl::GetFlag(FLAGS_warmup_batch_size)), 1, 65536},
      {"drain_timeout", absl::GetFlag(FLAGS_drain_timeout), 0, kNoLimit},
      {"max_connection_age_s", double(absl::GetFlag(FLAGS_max_connection_age_s)), 0, kNoLimit},
      {"max_message_mb", double(absl::GetFlag(FLAGS_max_message_mb)), 1, 2047},
  };
  for (const Range& r : ranges) {
    if (r.value >= r.low && r.value <= r.high) continue;
    return absl::InvalidArgumentError(
        r.high == kNoLimit
            ? absl::StrFormat("--%s: must be at least %.15g, got %.15g", r.name, r.low, r.value)
            : absl::StrFormat("--%s: must be in [%.15g, %.15g], got %.15g", r.name, r.low, r.high, r.value));
  }
  return absl::OkStatus();
}

int Run() {
  if (absl::Status ranges = CheckFlagRanges(); !ranges.ok()) return Fail(ranges);
  // SIGTERM / SIGINT are taken by sigwait below, in no other thread.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto models = ReadModelRepository(absl::GetFlag(FLAGS_model_repository));
  if (!models.ok()) return Fail(models.status());
  int default_model = 0;
  if (const std::string name = absl::GetFlag(FLAGS_default_model); !name.empty()) {
    default_model = -1;
    for (size_t i = 0; i < models->size(); ++i)
      if ((*models)[i].name == name) default_model = static_cast<int>(i);
    if (default_model < 0) {
      std::vector<std::string> names;
      for (const auto& m : *models) names.push_back(m.name);
      return Fail(absl::NotFoundError(absl::StrCat("--default_model: no model named '", name, "' (available: ",
                                                   absl::StrJoin(names, ", "), ")")));
    }
  }

  Batcher::Options batcher_options;
  std::vector<ModelLabels> labels;
  for (const auto& m : *models) {
    batcher_options.models.push_back(QueueOptions(m));
    labels.push_back({m.name, m.config.architecture(), m.config.img_resolution(), m.config.img_channels(),
                      m.config.num_classes(), m.config.default_steps()});
  }

  WorkerPool::Options pool_options;
  const std::string device = absl::GetFlag(FLAGS_device);
  if (device != "cpu" && device != "cuda")
    return Fail(absl::InvalidArgumentError(absl::StrCat("--device: must be cpu or cuda, got ", device)));
  pool_options.device = device == "cuda" ? WorkerPool::Options::Device::kCuda : WorkerPool::Options::Device::kCpu;
  pool_options.cpu_workers = absl::GetFlag(FLAGS_workers);
  pool_options.intra_op_threads = absl::GetFlag(FLAGS_intra_op_threads);
  if (const char* gate = std::getenv("TCM_TEST_BATCH_GATE")) pool_options.batch_gate_file = gate;

  auto credentials = Credentials();
  if (!credentials.ok()) return Fail(credentials.status());

  // Metrics first, so that start-up is observable.
  ServerMetrics metrics(labels);
  batcher_options.on_queue_depth = [&metrics](int model, size_t depth) { metrics.model(model).SetQueueDepth(depth); };
  auto batcher = Batcher::Create(batcher_options);
  if (!batcher.ok()) return Fail(batcher.status());
  std::unique_ptr<MetricsHttpServer> metrics_http;
  if (const int port = absl::GetFlag(FLAGS_metrics_port); port >= 0) {
    auto started = MetricsHttpServer::Start(metrics.registry(), port);
    if (!started.ok()) return Fail(started.status());
    metrics_http = std::move(*started);
  }
  auto pool = WorkerPool::Create(pool_options, *models, batcher->get(), &metrics);
  if (!pool.ok()) return Fail(pool.status());

  TcmServiceImpl::Options service_options;
  service_options.default_model = default_model;
  service_options.limits.max_images_per_request = absl::GetFlag(FLAGS_max_images_per_request);
  std::vector<ServedModel> served;
  for (size_t i = 0; i < models->size(); ++i) {
    const ModelDirectory& m = (*models)[i];
    served.push_back(DescribeModel(m.name, m.config, m.labels, (*batcher)->MaxQueueSize(static_cast<int>(i))));
  }
  TcmServiceImpl service(service_options, std::move(served), pool->get(), &metrics);

  std::vector<std::string> model_names;
  for (const auto& m : *models) model_names.push_back(m.name);
  HealthService health(model_names);  // NOT_SERVING until warmed up
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(absl::StrCat("0.0.0.0:", absl::GetFlag(FLAGS_port)), *credentials, &bound_port);
  builder.SetMaxReceiveMessageSize(absl::GetFlag(FLAGS_max_message_mb) << 20);
  builder.SetMaxSendMessageSize(absl::GetFlag(FLAGS_max_message_mb) << 20);
  if (const int age = absl::GetFlag(FLAGS_max_connection_age_s); age > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, age * 1000);
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, 10000);  // calls in flight may finish
  }
  builder.RegisterService(&service);
  builder.RegisterService(&health);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || bound_port == 0)
    return Fail(absl::UnavailableError(absl::StrCat("--port ", absl::GetFlag(FLAGS_port), ": cannot listen")));
  const absl::Status warm = (*pool)->WarmUp(absl::GetFlag(FLAGS_warmup_batch_size));
  if (!warm.ok()) {
    health.Shutdown();  // so that an open Watch stream cannot hold the server's shutdown
    server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
    return Fail(warm);
  }
  (*pool)->Start();
  health.SetServing(true);
  std::printf("tcm-server: serving %zu model(s) on port %d (default '%s'), metrics on port %d\n", models->size(),
              bound_port, (*models)[default_model].name.c_str(), metrics_http ? metrics_http->port() : 0);
  std::printf("  try: build/bin/tcm-client --server localhost:%d --steps 2 --num 4\n", bound_port);
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  std::printf("tcm-server: signal %d: draining (up to %.0f s)\n", signal_number, absl::GetFlag(FLAGS_drain_timeout));
  std::fflush(stdout);
  health.SetServing(false);
  (*batcher)->Close();  // new calls: UNAVAILABLE; queued work goes on
  const absl::Time drain_deadline = absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_drain_timeout));
  // The port stays open while queued work drains, so health checks see
  // NOT_SERVING and late calls a clear UNAVAILABLE. Then a short grace for the
  // last responses.
  absl::Notification drained;
  std::thread joiner([&] {
    (*pool)->Join();
    drained.Notify();
  });
  drained.WaitForNotificationWithDeadline(drain_deadline);
  health.Shutdown();  // open Watch streams end now
  server->Shutdown(absl::ToChronoTime(std::min(drain_deadline, absl::Now() + absl::Seconds(2))));
  joiner.join();
  std::printf("tcm-server: drained, exiting\n");
  return 0;
}

}  // namespace
}  // namespace tcm

int main(int argc, char** argv) {
  tcm::SetUsage(
      "Serves Truncated Consistency Models over gRPC.\n"
      "  tcm-server --model_repository models --port 50051 --metrics_port 9464");
  absl::ParseCommandLine(argc, argv);
  return tcm::Run();
}
