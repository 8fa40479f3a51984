// Conversions at the gRPC edge, in one place: statuses and call deadlines.
#ifndef TCM_SERVER_STATUS_UTIL_H_
#define TCM_SERVER_STATUS_UTIL_H_

#include <grpcpp/server_context.h>
#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace tcm {

grpc::Status ToGrpcStatus(const absl::Status& status);

// "OK", "INVALID_ARGUMENT", ... (the gRPC code names, used as metric labels).
std::string StatusCodeName(absl::StatusCode code);

// The call's deadline; InfiniteFuture when the caller set none (gRPC's
// "none" is a time far in the future).
absl::Time CallDeadline(const grpc::ServerContextBase& context);

}  // namespace tcm

#endif  // TCM_SERVER_STATUS_UTIL_H_
