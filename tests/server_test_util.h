// Helpers for integration tests that run a real tcm-server as a child process
// and talk to it over gRPC on loopback and to its Prometheus endpoint.
//
//   TempDir dir;
//   ServerProcess::Options options;
//   options.repository = *WriteTestModelRepository(dir.path() + "/models", {});
//   options.extra_flags = {"--workers", "2"};
//   auto server = ServerProcess::Start(options);  // returns once health says SERVING
//   auto stub = tcm::v1::TcmService::NewStub((*server)->NewChannel());
//   auto metrics = FetchMetrics((*server)->metrics_port());
//   MetricValue(*metrics, "tcm_requests_total", {{"code", "OK"}, {"model", "cond"}, {"steps", "2"}});
//
// The server binary comes from the TCM_SERVER_BIN compile definition (the
// environment variable TCM_SERVER_BIN, when set, names another one), the
// shared reference fixtures from TCM_FIXTURES_DIR.
#ifndef TCM_TESTS_SERVER_TEST_UTIL_H_
#define TCM_TESTS_SERVER_TEST_UTIL_H_

#include <grpcpp/grpcpp.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tcm/v1/tcm_service.grpc.pb.h"

namespace tcm::testing {

// ---------------------------------------------------------------------------
// Files

// A fresh directory under the system temp dir, removed with its contents.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Per-model batching written into config.pbtxt; 0 = unset (server flag default).
struct TestBatching {
  uint32_t max_batch_size = 0;
  uint64_t max_queue_delay_us = 0;
  uint32_t max_queue_size = 0;
  bool cache_disabled = false;  // caching { enable: false }
};

struct TestRepositoryOptions {
  TestBatching cond;    // model "cond": ddpmpp_cond_tiny, 10 classes, 32x32x3, with labels.txt
  TestBatching uncond;  // model "uncond": ddpmpp_cifar_tiny, unconditional, 32x32x3
};

// The class names written to cond/labels.txt.
const std::vector<std::string>& CondClassNames();

// Writes a model repository with the models "cond" and "uncond" (built from
// the shared reference fixtures) under `root`; returns `root`.
absl::StatusOr<std::string> WriteTestModelRepository(const std::string& root, const TestRepositoryOptions& options);

// ---------------------------------------------------------------------------
// Processes and ports

// A TCP port that was free on all interfaces a moment ago.
int FreePort();
// Two distinct free ports.
std::pair<int, int> TwoFreePorts();

// A tcm-server child process on free ports (gRPC and metrics). The child is
// killed with SIGKILL when this object goes, or when the thread that started
// it exits (PR_SET_PDEATHSIG), so a crashed test leaves no server behind.
class ServerProcess {
 public:
  struct Options {
    std::string repository;                // --model_repository
    std::vector<std::string> extra_flags;  // e.g. {"--workers", "2"}
    bool wait_until_serving = true;        // Start() returns once health says SERVING
    double startup_timeout_seconds = 180;
    std::string log_dir;            // where server-PORT.log goes; empty = system temp dir
    std::string batch_gate_file;    // TCM_TEST_BATCH_GATE: workers wait while it exists
    std::string control_gate_file;  // TCM_TEST_CONTROL_GATE: model control waits while it exists
  };

  // Starts the server (retrying with other ports if a port was taken).
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(const Options& options);
  ~ServerProcess();

  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  pid_t pid() const { return pid_; }
  std::string address() const;  // "127.0.0.1:PORT"

  // A new channel with its own subchannel pool and short reconnect backoff.
  std::shared_ptr<grpc::Channel> NewChannel() const;

  // Polls the overall health check until SERVING; fails if the process exits
  // or the timeout passes.
  absl::Status WaitUntilServing(double timeout_seconds);

  void Signal(int signal_number);
  bool Running();
  // Waits for the process to exit; its wait status, or DeadlineExceeded.
  absl::StatusOr<int> WaitExit(double timeout_seconds);
  // Sends SIGTERM and waits for the exit status.
  absl::StatusOr<int> Stop(double timeout_seconds = 60);

  const std::string& log_path() const { return log_path_; }
  std::string Log() const;

 private:
  ServerProcess() = default;
  pid_t pid_ = -1;
  bool reaped_ = false;
  int wait_status_ = 0;
  int port_ = 0;
  int metrics_port_ = 0;
  std::string log_path_;
};

// A file whose presence holds a server thread (a test hook read from the
// environment). Starts open; opened again when it goes.
class FileGate {
 public:
  explicit FileGate(std::string path) : path_(std::move(path)) {}
  ~FileGate() { Open(); }
  const std::string& path() const { return path_; }
  void Close();  // creates the file: the thread waits
  void Open();   // removes it: the thread goes on

 private:
  std::string path_;
};

// Holds a server's batches (ServerProcess::Options::batch_gate_file): while
// closed, every worker waits before its next forward pass, so queued work
// stays queued however fast the machine is.
class BatchGate : public FileGate {
 public:
  explicit BatchGate(const std::string& dir) : FileGate(dir + "/batch-gate") {}
};

// Holds a server's model control (ServerProcess::Options::control_gate_file):
// while closed, its thread takes no LoadModel or UnloadModel call, so calls
// stay queued.
class ControlGate : public FileGate {
 public:
  explicit ControlGate(const std::string& dir) : FileGate(dir + "/control-gate") {}
};

// ---------------------------------------------------------------------------
// gRPC

std::chrono::system_clock::time_point DeadlineIn(double seconds);

// grpc.health.v1.Health/Check of `service` ("" = the whole server).
struct HealthAnswer {
  grpc::Status status;  // the call's status (UNAVAILABLE when nobody listens)
  grpc::health::v1::HealthCheckResponse::ServingStatus serving =
      grpc::health::v1::HealthCheckResponse::UNKNOWN;  // when status is OK
};
HealthAnswer CheckHealth(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                         double timeout_seconds = 2);

v1::GenerateRequest MakeRequest(const std::string& model, std::optional<int64_t> class_label, unsigned steps,
                                unsigned num_images, std::optional<uint64_t> seed,
                                v1::ImageFormat format = v1::IMAGE_FORMAT_RAW);

struct GenerateResult {
  grpc::Status status;
  v1::GenerateResponse response;
  double seconds = 0;  // client-side latency
  std::chrono::steady_clock::time_point finished;
};

// One Generate call with a deadline of `timeout_seconds`. With `context`, the
// call uses that (fresh) context, which the caller owns: to TryCancel it from
// another thread, it must outlive both the call and the TryCancel (the call
// may return while TryCancel still runs).
GenerateResult CallGenerate(v1::TcmService::Stub& stub, const v1::GenerateRequest& request,
                            double timeout_seconds = 300, grpc::ClientContext* context = nullptr);

// How two responses' images differ (RAW or PNG bytes, compared byte by byte).
struct ImageDiff {
  bool same_shape = false;  // same count, sizes, indices, classes, seeds
  std::string shape_error;  // why not
  int max_abs_diff = 0;     // largest byte difference
  int64_t differing_bytes = 0;
  int64_t total_bytes = 0;
};
ImageDiff CompareImages(const v1::GenerateResponse& a, const v1::GenerateResponse& b);

// ---------------------------------------------------------------------------
// Metrics

// One HTTP/1.1 exchange with 127.0.0.1:PORT (Connection: close; a JSON body
// when `body` is not empty): the answer's status and body as sent (a chunked
// body keeps its chunk lines). An error when nothing complete came back
// within `timeout_seconds` of silence.
struct HttpReply {
  int status = 0;
  std::string body;
};
absl::StatusOr<HttpReply> HttpCall(int port, const std::string& method, const std::string& target,
                                   const std::string& body, double timeout_seconds);

// GET http://127.0.0.1:PORT/metrics; the body of a 200 answer.
absl::StatusOr<std::string> FetchMetrics(int port);

struct MetricSample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};
// The samples of a Prometheus text exposition (comments skipped).
std::vector<MetricSample> ParseMetrics(const std::string& text);

// The value of the sample named `name` whose label set is exactly `labels`.
std::optional<double> MetricValue(const std::string& text, const std::string& name,
                                  const std::map<std::string, std::string>& labels = {});
// Same, 0 when absent (counters that were never touched are not exported).
double MetricOrZero(const std::string& text, const std::string& name,
                    const std::map<std::string, std::string>& labels = {});
// Sum over the samples named `name` whose labels include `subset`.
double MetricSum(const std::string& text, const std::string& name,
                 const std::map<std::string, std::string>& subset = {});

// Polls the metrics endpoint until `done(text)` holds; the last text seen, or
// DeadlineExceeded with it in the message.
absl::StatusOr<std::string> WaitForMetrics(int port, const std::function<bool(const std::string&)>& done,
                                           double timeout_seconds);

}  // namespace tcm::testing

#endif  // TCM_TESTS_SERVER_TEST_UTIL_H_
