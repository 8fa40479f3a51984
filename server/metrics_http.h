// Serves a prometheus-cpp registry in the Prometheus text format on
// GET /metrics. prometheus-cpp's own Exposer (civetweb) cannot start its
// worker threads in a process that links LibTorch: civetweb creates threads
// with a fixed small stack, which LibTorch's large static thread-local
// storage does not fit ("Cannot create first worker thread"). This endpoint
// runs on one ordinary thread instead; scrapes are small and infrequent.
#ifndef TCM_SERVER_METRICS_HTTP_H_
#define TCM_SERVER_METRICS_HTTP_H_

#include <prometheus/registry.h>

#include <atomic>
#include <memory>
#include <thread>

#include "absl/status/statusor.h"

namespace tcm {

class MetricsHttpServer {
 public:
  // Listens on 0.0.0.0:`port` (0 = any free port, see port()).
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(std::shared_ptr<prometheus::Registry> registry,
                                                                  int port);
  ~MetricsHttpServer();

  int port() const { return port_; }

 private:
  MetricsHttpServer(std::shared_ptr<prometheus::Registry> registry, int fd, int port);
  void Serve();
  void Answer(int client);

  std::shared_ptr<prometheus::Registry> registry_;
  const int listen_fd_;
  const int port_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;  // declared last: started after, and joined before, the members above go
};

}  // namespace tcm

#endif  // TCM_SERVER_METRICS_HTTP_H_
