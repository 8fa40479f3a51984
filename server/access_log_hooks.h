// Where the access log attaches to the listeners: a gRPC server interceptor
// that writes one line per RPC (every service, the health and reflection
// services too), and HttpServer's completion hook for HTTP. Generation
// details come from GenerationFront under the call's key (AccessLogKey for
// gRPC, the HttpRequest's address for HTTP).
#ifndef TCM_SERVER_ACCESS_LOG_HOOKS_H_
#define TCM_SERVER_ACCESS_LOG_HOOKS_H_

#include <grpcpp/server_context.h>
#include <grpcpp/support/server_interceptor.h>

#include <memory>
#include <vector>

#include "server/access_log.h"
#include "server/http_server.h"

namespace tcm {

// The key a gRPC call's generation details are filed under.
inline const void* AccessLogKey(const grpc::ServerContextBase* context) { return context; }

// For grpc::ServerBuilder::experimental().SetInterceptorCreators: none when
// `log` is nullptr. `log` must outlive the server.
std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> AccessLogInterceptors(
    AccessLog* log);

// For HttpServer::Options::on_complete; `log` must outlive the listener.
HttpServer::CompletionHook HttpAccessLogger(AccessLog* log);

}  // namespace tcm

#endif  // TCM_SERVER_ACCESS_LOG_HOOKS_H_
