// The gRPC listener's settings from tcm-server's options: address and port,
// credentials, message size limits, connection age and the access log's
// interceptor. The services are registered by the caller.
#ifndef TCM_SERVER_GRPC_LISTENER_H_
#define TCM_SERVER_GRPC_LISTENER_H_

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include <memory>

#include "server/access_log.h"
#include "server/server_options.h"

namespace tcm {

// The largest request message received (--max_message_mb when smaller): a
// request is a few hundred bytes; responses may be up to --max_message_mb.
inline constexpr int kMaxRequestMessageBytes = 4 << 20;

// `bound_port` is set by BuildAndStart (0 when it could not listen);
// `access_log` (nullptr = none) must outlive the server.
void ConfigureGrpcListener(const ServerOptions& options, const std::shared_ptr<grpc::ServerCredentials>& credentials,
                           AccessLog* access_log, int* bound_port, grpc::ServerBuilder* builder);

}  // namespace tcm

#endif  // TCM_SERVER_GRPC_LISTENER_H_
