#include "server/access_log.h"

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/http_server.h"

namespace tcm {

std::string AccessLogLine(const AccessRecord& r) {
  std::string line =
      absl::StrCat("{\"time\": ", JsonQuoted(absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", r.time, absl::UTCTimeZone())),
                   ", \"peer\": ", JsonQuoted(r.peer), ", \"protocol\": ", JsonQuoted(r.protocol),
                   ", \"method\": ", JsonQuoted(r.method));
  if (!r.path.empty()) absl::StrAppend(&line, ", \"path\": ", JsonQuoted(r.path));
  absl::StrAppend(&line, ", \"model\": ", JsonQuoted(r.generation.model), ", \"steps\": ", r.generation.steps,
                  ", \"images\": ", r.generation.images, ", \"status\": ", JsonQuoted(r.status),
                  absl::StrFormat(", \"queue_seconds\": %.6f, \"compute_seconds\": %.6f, \"total_seconds\": %.6f}",
                                  r.generation.queue_seconds, r.generation.compute_seconds, r.total_seconds));
  return line;
}

absl::StatusOr<std::unique_ptr<AccessLog>> AccessLog::Open(const std::string& destination) {
  if (destination.empty()) return nullptr;
  if (destination == "-") return std::unique_ptr<AccessLog>(new AccessLog(stderr, /*owned=*/false));
  std::FILE* file = std::fopen(destination.c_str(), "a");
  if (file == nullptr)
    return absl::InvalidArgumentError(absl::StrCat("--access_log '", destination, "': cannot open for appending: ",
                                                   std::strerror(errno), " (\"-\" = stderr, empty = no log)"));
  return std::unique_ptr<AccessLog>(new AccessLog(file, /*owned=*/true));
}

AccessLog::~AccessLog() {
  if (owned_) std::fclose(file_);
}

void AccessLog::Write(const AccessRecord& record) {
  const std::string line = AccessLogLine(record) + "\n";
  absl::MutexLock lock(&write_mu_);
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

void AccessLog::Annotate(const void* call, GenerationSummary summary) {
  absl::MutexLock lock(&pending_mu_);
  pending_[call] = std::move(summary);
}

std::optional<GenerationSummary> AccessLog::Take(const void* call) {
  absl::MutexLock lock(&pending_mu_);
  auto it = pending_.find(call);
  if (it == pending_.end()) return std::nullopt;
  GenerationSummary summary = std::move(it->second);
  pending_.erase(it);
  return summary;
}

}  // namespace tcm
