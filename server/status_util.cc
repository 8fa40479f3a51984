#include "server/status_util.h"

#include <grpc/support/time.h>

#include <cstdint>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace tcm {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl::StatusCode and grpc::StatusCode share their numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), CutStatusMessage(status.message()));
}

std::string CutStatusMessage(absl::string_view message) {
  if (message.size() <= kMaxStatusMessageBytes) return std::string(message);
  size_t keep = kMaxStatusMessageBytes - 64;                                              // room for the note
  while (keep > 0 && (static_cast<unsigned char>(message[keep]) & 0xC0) == 0x80) --keep;  // a continuation byte
  return absl::StrCat(message.substr(0, keep), "... (cut at ", keep, " of ", message.size(), " bytes)");
}

std::string StatusCodeName(absl::StatusCode code) { return absl::AsciiStrToUpper(absl::StatusCodeToString(code)); }

absl::Time CallDeadline(const grpc::ServerContextBase& context) {
  const gpr_timespec deadline = gpr_convert_clock_type(context.raw_deadline(), GPR_CLOCK_REALTIME);
  const int64_t year = 365 * 24 * 3600;
  if (deadline.tv_sec >= gpr_now(GPR_CLOCK_REALTIME).tv_sec + year) return absl::InfiniteFuture();
  return absl::FromUnixSeconds(deadline.tv_sec) + absl::Nanoseconds(deadline.tv_nsec);
}

}  // namespace tcm
