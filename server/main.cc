// tcm-server: serves every model of a model repository over gRPC
// (tcm.v1.TcmService, the Open Inference Protocol's inference.GRPCInferenceService,
// grpc.health.v1, reflection), the protocol's REST form over HTTP, and Prometheus metrics.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <cstdlib>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/cpu_features.h"
#include "common/flags_usage.h"
#include "common/tool_main.h"
#include "common/utf8.h"
#include "model/malloc_config.h"
#include "model/model_repository.h"
#include "model/sampler.h"
#include "server/batcher.h"
#include "server/grpc_listener.h"
#include "server/health_service.h"
#include "server/inference_service.h"
#include "server/metrics.h"
#include "server/metrics_endpoint.h"
#include "server/model_control.h"
#include "server/rest_service.h"
#include "server/server_credentials.h"
#include "server/server_flags.h"
#include "server/stop_signals.h"
#include "server/tcm_service.h"
#include "server/worker_pool.h"

namespace tcm {
namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "tcm-server: %s\n",
               PrintableLine(std::string(status.message())).c_str());  // one line, whatever it quotes
  return 1;
}

int Run(const ServerOptions& o) {
  if (absl::Status checked = CheckServerOptions(o); !checked.ok()) return Fail(checked);
  auto tls = ReadTlsFlags(o.tls_cert, o.tls_key, o.tls_client_ca);  // before any model loads
  if (!tls.ok()) return Fail(tls.status());
  KeepFreedMemoryForReuse();
  const sigset_t stop_signals = BlockStopSignals();  // before any thread starts

  auto models = ReadModelRepository(o.model_repository);
  if (!models.ok()) return Fail(models.status());
  std::vector<std::string> names;
  Batcher::Options batcher_options;
  std::vector<ServedModel> served;  // what the service and the metrics know of each model
  for (auto& m : *models) {
    names.push_back(m.name);
    absl::Status precision = ApplyPrecision(m.name, &m.config, o, CpuHasNativeBf16());
    if (!precision.ok()) return Fail(precision);
    auto queue = MergeQueueOptions(m.name, m.config, StepsShareNetwork(m.config), o);
    if (!queue.ok()) return Fail(queue.status());
    batcher_options.models.push_back(*queue);
    served.push_back(DescribeModel(m.name, m.config, m.labels, *queue));
  }
  auto default_model = DefaultModelIndex(names, o.default_model);
  if (!default_model.ok()) return Fail(default_model.status());
  auto access_log = AccessLog::Open(o.access_log);  // null: none
  if (!access_log.ok()) return Fail(access_log.status());
  // Metrics first, so that start-up is observable.
  ServerMetrics metrics(served);
  batcher_options.on_queue_depth = [&metrics](int m, int level, size_t n) { metrics.model(m).SetQueueDepth(level, n); };
  auto batcher = Batcher::Create(batcher_options);
  if (!batcher.ok()) return Fail(batcher.status());
  auto metrics_http =
      HttpServer::Start(MetricsListener(o, access_log->get()), MetricsOnlyHandler(metrics.registry()));  // null: -1
  if (!metrics_http.ok()) return Fail(metrics_http.status());
  auto pool = WorkerPool::Create(PoolOptions(o), *models, batcher->get(), &metrics);
  if (!pool.ok()) return Fail(pool.status());
  for (auto& m : *models) m.weights.clear();  // every replica is built: the weights as read can go
  std::unique_ptr<ResponseCache> cache;       // --cache_mb; 0 = none
  auto cache_bytes = [&metrics](size_t bytes) { metrics.SetCacheBytes(bytes); };
  if (o.cache_mb > 0) cache = std::make_unique<ResponseCache>(static_cast<size_t>(o.cache_mb) << 20, cache_bytes);
  // The served models: fixed, or changed by model control while serving.
  auto catalog = std::make_shared<ModelCatalog>(ModelTable{NumberSlots(served), *default_model});
  const GenerationFront::Options service_options{
      *default_model, {unsigned(o.max_images_per_request)},
      cache.get(),    access_log->get(),
      catalog,        o.max_open_calls > 0 ? std::make_shared<OpenCallLimit>(o.max_open_calls) : nullptr};
  HealthService health(names);            // NOT_SERVING until warmed up
  std::unique_ptr<ModelControl> control;  // --model_control poll or explicit
  if (o.model_control != "none") {
    ModelControl::Parts parts{o, pool->get(), batcher->get(), &metrics, catalog.get(), &health};
    if (const char* gate = std::getenv("TCM_TEST_CONTROL_GATE")) parts.gate_file = gate;
    control = std::make_unique<ModelControl>(std::move(parts), *models, names[*default_model]);
  }
  auto ready = [&health](const std::string& name) { return health.IsServing(name); };
  InferenceServiceImpl inference(service_options, served, pool->get(), &metrics, ready);
  RestService rest(service_options, served, pool->get(), &metrics, ready, metrics.registry());
  TcmServiceImpl service(service_options, std::move(served), pool->get(), &metrics);
  service.SetModelControl(o.model_control, control.get());
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int bound_port = 0;
  ConfigureGrpcListener(o, GrpcServerCredentials(*tls), access_log->get(), &bound_port, &builder);
  builder.RegisterService(&service);
  builder.RegisterService(&inference);
  builder.RegisterService(&health);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || bound_port == 0)
    return Fail(absl::UnavailableError(absl::StrCat("--port ", o.port, ": cannot listen")));
  absl::StatusOr<std::unique_ptr<HttpServer>> http{nullptr};  // after warm-up: REST calls wait with no deadline
  absl::Status started = (*pool)->WarmUp(o.warmup_batch_size);
  if (started.ok())
    http = HttpServer::Start(RestListener(o, *tls, access_log->get()),
                             [&rest](const HttpRequest& r) { return rest.Handle(r); });
  if (started.ok()) started = http.status();
  if (!started.ok()) {
    health.Shutdown();  // so that an open Watch stream cannot hold the server's shutdown
    server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
    return Fail(started);
  }
  (*pool)->Start();
  health.SetServing(true);
  if (control) control->Start();
  std::printf("tcm-server: serving %zu model(s) on port %d (default '%s'), metrics on port %d, http on port %d\n",
              models->size(), bound_port, names[*default_model].c_str(), *metrics_http ? (*metrics_http)->port() : 0,
              *http ? (*http)->port() : 0);
  std::printf("  try: build/bin/tcm-client --server localhost:%d --steps 2 --num 4\n", bound_port);
  if (*http)
    std::printf("  or open http%s://localhost:%d/ (the playground)\n", tls->enabled() ? "s" : "", (*http)->port());
  std::fflush(stdout);

  const int signal_number = WaitForStopSignal(stop_signals);
  std::printf("tcm-server: signal %d: draining (up to %.0f s)\n", signal_number, o.drain_timeout);
  std::fflush(stdout);
  health.SetServing(false);
  if (control) {
    control->Stop();           // a load under way finishes first; later ones are refused
    health.SetServing(false);  // including a model that load set SERVING
  }
  (*batcher)->Close();  // new calls: UNAVAILABLE; queued work goes on
  const absl::Time drain_deadline = absl::Now() + absl::Seconds(o.drain_timeout);
  // The port stays open while queued work drains, so health checks see
  // NOT_SERVING and late calls a clear UNAVAILABLE; then a short grace for the last responses.
  absl::Notification drained;
  std::thread joiner([&] {
    (*pool)->Join();
    drained.Notify();
  });
  if (!drained.WaitForNotificationWithDeadline(drain_deadline)) {
    // Past the deadline nothing waits any more, whatever door it came in by:
    // queued images are dropped (their calls end UNAVAILABLE), passes under way finish.
    (*batcher)->CutQueued(absl::UnavailableError(
        absl::StrCat("the server stopped: its drain time (--drain_timeout ", o.drain_timeout, " s) ran out first")));
    std::printf("tcm-server: drain timeout passed: queued work dropped\n");
    std::fflush(stdout);
  }
  health.Shutdown();  // open Watch streams end now
  // The last answers (cut calls' errors among them) get 2 seconds, over gRPC and HTTP.
  const absl::Time last_answers = absl::Now() + absl::Seconds(2);
  server->Shutdown(absl::ToChronoTime(last_answers));
  joiner.join();
  if (*http) (*http)->WaitUntilIdle(last_answers);
  std::printf("tcm-server: drained, exiting\n");
  return 0;
}

}  // namespace
}  // namespace tcm

int main(int argc, char** argv) {
  tcm::SetUsage(
      "Serves Truncated Consistency Models over gRPC.\n"
      "  tcm-server --model_repository models --port 50051 --metrics_port 9464");
  if (absl::Status only_flags = tcm::NoPositionalArguments(absl::ParseCommandLine(argc, argv)); !only_flags.ok())
    return tcm::Fail(only_flags);
  return tcm::Run(tcm::ServerOptionsFromFlags());
}
