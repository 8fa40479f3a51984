#include "server/metrics_endpoint.h"

#include <prometheus/text_serializer.h>

#include <utility>

namespace tcm {

std::optional<HttpResponse> MetricsEndpoint(const prometheus::Registry& registry, const HttpRequest& request) {
  if (request.path != "/metrics") return std::nullopt;
  if (request.method != "GET" && request.method != "HEAD") return MethodNotAllowed(request, "GET, HEAD");
  return HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8",
                      prometheus::TextSerializer().Serialize(registry.Collect())};
}

HttpServer::Handler MetricsOnlyHandler(std::shared_ptr<prometheus::Registry> registry) {
  return [registry = std::move(registry)](const HttpRequest& request) {
    if (auto response = MetricsEndpoint(*registry, request)) return *std::move(response);
    return JsonError(404, "only GET /metrics is served on this port, not " + request.path);
  };
}

}  // namespace tcm
