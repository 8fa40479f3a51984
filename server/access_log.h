// --access_log: one JSON line per call, gRPC and HTTP alike, for example
//   {"time": "2026-12-03T09:10:11.123456Z", "peer": "ipv4:127.0.0.1:43210",
//    "protocol": "grpc", "method": "/tcm.v1.TcmService/Generate",
//    "model": "fashion-mnist-tcm", "steps": 2, "images": 4, "status": "OK",
//    "queue_seconds": 0.0012, "compute_seconds": 0.21, "total_seconds": 0.25}
// (on one line). gRPC calls have the status code's name, HTTP calls the
// status number as a string and a "path". Calls that generate nothing have
// model "" and zeros. Torch- and gRPC-free; thread-safe.
#ifndef TCM_SERVER_ACCESS_LOG_H_
#define TCM_SERVER_ACCESS_LOG_H_

#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace tcm {

// What a generation call adds to its line: known once the call has finished.
struct GenerationSummary {
  std::string model;
  unsigned steps = 0;
  unsigned images = 0;
  double queue_seconds = 0;    // the longest wait of an image before its first batch
  double compute_seconds = 0;  // the forward passes that served the call
};

struct AccessRecord {
  absl::Time time;       // when the call arrived
  std::string peer;      // "ipv4:127.0.0.1:43210", "ipv6:[::1]:43210"
  std::string protocol;  // "grpc" or "http"
  std::string method;    // gRPC's full method name, or the HTTP method
  std::string path;      // HTTP only: the path, without the query
  std::string status;    // "OK", "DEADLINE_EXCEEDED", ... or "200", "404", ...
  GenerationSummary generation;
  double total_seconds = 0;  // arrival to the status sent
};

// The record as one line of JSON, without the newline.
std::string AccessLogLine(const AccessRecord& record);

class AccessLog {
 public:
  // `destination`: "-" = stderr, else a file, opened for appending (so a
  // rotation by copy-and-truncate works). "" is no log: nullptr.
  static absl::StatusOr<std::unique_ptr<AccessLog>> Open(const std::string& destination);
  ~AccessLog();

  // Writes the record's line and flushes it.
  void Write(const AccessRecord& record);

  // Generation details travel from the front end that runs a call to the
  // layer that writes its line under a key naming the call while it lasts
  // (its gRPC ServerContext, its HTTP request): Annotate before the call's
  // status is sent, Take (which forgets it) when the line is written.
  void Annotate(const void* call, GenerationSummary summary);
  std::optional<GenerationSummary> Take(const void* call);

 private:
  AccessLog(std::FILE* file, bool owned) : file_(file), owned_(owned) {}

  std::FILE* const file_;
  const bool owned_;
  absl::Mutex write_mu_;
  absl::Mutex pending_mu_;
  absl::flat_hash_map<const void*, GenerationSummary> pending_ ABSL_GUARDED_BY(pending_mu_);
};

}  // namespace tcm

#endif  // TCM_SERVER_ACCESS_LOG_H_
