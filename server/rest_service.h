// The Open Inference Protocol's REST endpoints on --http_port (Triton's 8000),
// answering on HttpServer's connection threads:
//   GET  /v2/health/live, /v2/health/ready, /v2
//   GET  /v2/models/{m}[/versions/{v}], /v2/models/{m}[/versions/{v}]/ready
//   POST /v2/models/{m}[/versions/{v}]/infer
//   GET  /metrics (the same samples as --metrics_port)
//   GET  /v1/models/{m}/generate?class=3&steps=2&seed=7&num=4: image/png, for
//        people and pages (num above 1: one grid PNG); tcm.v1's rules, and the
//        pixels of tcm.v1 Generate for the same fields
//   GET  /v1/models/{m}/stream?...&preview=1: the same call's images as JSON
//        lines, each as soon as it exists (image_line_stream.h)
//   GET  /v1/models: tcm.v1 ListModels as JSON, and max_images_per_request
//   GET  /: the playground page (playground.h)
// Infer translates its JSON to the gRPC message (rest_json.h) and submits it
// through a GenerationFront to the same queue as the gRPC front ends, so it
// gives the same pixels. Errors are {"error": "..."}: 400 bad request, 404
// unknown model or endpoint, 405 wrong method, 413 body over the limit
// (HttpServer), 429 queue full, 503 not ready or draining. Torch-free.
#ifndef TCM_SERVER_REST_SERVICE_H_
#define TCM_SERVER_REST_SERVICE_H_

#include <prometheus/registry.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "server/generation_front.h"
#include "server/http_server.h"

namespace tcm {

class RestService {
 public:
  // Whether `name` ("" = the server as a whole, else a model) serves (health's SERVING).
  using Readiness = std::function<bool(const std::string& name)>;

  // As the gRPC services; `registry` (may be null: no /metrics) is served on GET /metrics.
  RestService(const GenerationFront::Options& options, std::vector<ServedModel> models, GenerationQueue* queue,
              ServerMetrics* metrics, Readiness ready, std::shared_ptr<prometheus::Registry> registry);

  // Thread-safe; blocks the calling connection's thread until an infer call ends.
  HttpResponse Handle(const HttpRequest& request);

 private:
  HttpResponse Infer(const HttpRequest& request, const std::string& model, const std::string& version);
  HttpResponse GeneratePng(const HttpRequest& request, const std::string& model);
  HttpResponse GenerateLines(const HttpRequest& request, const std::string& model);
  // HEAD of generate or stream: the query checked as GET's, its status and
  // content type answered; no work is started.
  HttpResponse HeadOfGeneration(const HttpRequest& request, const std::string& model, bool stream);
  // The call a /v1/models/{m}/generate or /stream query asks for, validated by
  // tcm.v1's rules (a refusal counted where `count_refusal`: a call, not a
  // HEAD); `stream` also takes `preview`.
  absl::StatusOr<GenerationSpec> SpecFromQuery(const HttpRequest& request, const std::string& model,
                                               v1::ImageFormat format, bool stream, bool count_refusal = true);
  // GET /v1/models: the models served now (model control adds, replaces and
  // removes them while serving), built per request as gRPC ListModels is.
  std::string ModelListJson() const;

  GenerationFront front_;
  const Readiness ready_;
  const std::shared_ptr<prometheus::Registry> registry_;
  const std::string playground_policy_;  // GET /: its Content-Security-Policy
};

}  // namespace tcm

#endif  // TCM_SERVER_REST_SERVICE_H_
