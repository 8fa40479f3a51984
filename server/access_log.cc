#include "server/access_log.h"

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tcm {
namespace {

// `text` as a JSON string: quotes, backslashes, control characters and bytes
// above 0x7f (peers and paths come from callers) escaped.
std::string Quoted(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    const unsigned char byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (byte < 0x20 || byte >= 0x80) {
      out += absl::StrFormat("\\u%04x", byte);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

}  // namespace

std::string AccessLogLine(const AccessRecord& r) {
  std::string line = absl::StrCat(
      "{\"time\": ", Quoted(absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", r.time, absl::UTCTimeZone())),
      ", \"peer\": ", Quoted(r.peer), ", \"protocol\": ", Quoted(r.protocol), ", \"method\": ", Quoted(r.method));
  if (!r.path.empty()) absl::StrAppend(&line, ", \"path\": ", Quoted(r.path));
  absl::StrAppend(&line, ", \"model\": ", Quoted(r.generation.model), ", \"steps\": ", r.generation.steps,
                  ", \"images\": ", r.generation.images, ", \"status\": ", Quoted(r.status),
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
