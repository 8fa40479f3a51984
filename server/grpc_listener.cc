#include "server/grpc_listener.h"

#include <algorithm>

#include "server/access_log_hooks.h"

namespace tcm {

void ConfigureGrpcListener(const ServerOptions& o, const std::shared_ptr<grpc::ServerCredentials>& credentials,
                           AccessLog* access_log, int* bound_port, grpc::ServerBuilder* builder) {
  builder->AddListeningPort(GrpcListenAddress(o), credentials, bound_port);
  builder->experimental().SetInterceptorCreators(AccessLogInterceptors(access_log));
  // Requests are a few hundred bytes: the receive limit stays small so that
  // no call makes the server hold (and protobuf expand) a large message.
  builder->SetMaxReceiveMessageSize(std::min(o.max_message_mb << 20, kMaxRequestMessageBytes));
  builder->SetMaxSendMessageSize(o.max_message_mb << 20);
  if (o.max_connection_age_s > 0) {
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, MaxConnectionAgeMs(o));
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, 10000);  // calls in flight may finish
  }
}

}  // namespace tcm
