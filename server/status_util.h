// Conversions at the gRPC edge, in one place: statuses and call deadlines.
#ifndef TCM_SERVER_STATUS_UTIL_H_
#define TCM_SERVER_STATUS_UTIL_H_

#include <grpcpp/server_context.h>
#include <grpcpp/support/status.h>

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace tcm {

// gRPC sends a status's message in a header, and clients refuse headers
// beyond their metadata limit (8 KiB in gRPC's own), reporting
// RESOURCE_EXHAUSTED in place of the status sent; a message that echoes a
// caller's long string (a model name of 9000 bytes) is therefore cut to
// kMaxStatusMessageBytes at a UTF-8 character's start, with its length noted.
inline constexpr size_t kMaxStatusMessageBytes = 1024;
grpc::Status ToGrpcStatus(const absl::Status& status);

// `message` cut as ToGrpcStatus cuts it.
std::string CutStatusMessage(absl::string_view message);

// "OK", "INVALID_ARGUMENT", ... (the gRPC code names, used as metric labels).
std::string StatusCodeName(absl::StatusCode code);

// The call's deadline; InfiniteFuture when the caller set none (gRPC's
// "none" is a time far in the future) or one more than a year away (read
// from gRPC's own time, since a deadline past 2262 overflows the
// nanoseconds of std::chrono::system_clock that ServerContext::deadline()
// converts it to, and would read as already passed).
absl::Time CallDeadline(const grpc::ServerContextBase& context);

}  // namespace tcm

#endif  // TCM_SERVER_STATUS_UTIL_H_
