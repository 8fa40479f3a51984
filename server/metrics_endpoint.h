// GET /metrics: a prometheus-cpp registry in the Prometheus text format, served
// by HttpServer (on --metrics_port, and on the HTTP port beside the REST API).
#ifndef TCM_SERVER_METRICS_ENDPOINT_H_
#define TCM_SERVER_METRICS_ENDPOINT_H_

#include <prometheus/registry.h>

#include <memory>
#include <optional>

#include "server/http_server.h"

namespace tcm {

// Answers GET /metrics (any query) with the registry's current samples, and
// nullopt for every other request, so that callers can chain handlers.
std::optional<HttpResponse> MetricsEndpoint(const prometheus::Registry& registry, const HttpRequest& request);

// A handler that serves MetricsEndpoint and 404 for everything else.
HttpServer::Handler MetricsOnlyHandler(std::shared_ptr<prometheus::Registry> registry);

}  // namespace tcm

#endif  // TCM_SERVER_METRICS_ENDPOINT_H_
