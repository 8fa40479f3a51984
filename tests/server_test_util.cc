#include "tests/server_test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "model/model_repository.h"
#include "model/test_fixtures.h"

#ifndef TCM_SERVER_BIN
#error "TCM_SERVER_BIN must be defined (path of the tcm-server binary)"
#endif

namespace tcm::testing {
namespace fs = std::filesystem;

namespace {

std::string Tail(const std::string& text, size_t max_chars = 4000) {
  return text.size() <= max_chars ? text : "..." + text.substr(text.size() - max_chars);
}

void SleepMs(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with code ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("killed by signal ", WTERMSIG(status));
  return absl::StrCat("wait status ", status);
}

}  // namespace

// ---------------------------------------------------------------------------
// Files

TempDir::TempDir() {
  std::string pattern = (fs::temp_directory_path() / "tcm_server_it_XXXXXX").string();
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (mkdtemp(buffer.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = buffer.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

const std::vector<std::string>& CondClassNames() {
  static const std::vector<std::string> names = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                 "dog",      "frog",       "horse", "ship", "truck"};
  return names;
}

namespace {

void ApplyBatching(const TestBatching& b, v1::ModelConfig* config) {
  if (b.max_batch_size) config->mutable_batching()->set_max_batch_size(b.max_batch_size);
  if (b.max_queue_delay_us) config->mutable_batching()->set_max_queue_delay_us(b.max_queue_delay_us);
  if (b.max_queue_size) config->mutable_batching()->set_max_queue_size(b.max_queue_size);
  if (b.cache_disabled) config->mutable_caching()->set_enable(false);
}

absl::Status WriteFixtureModel(const std::string& fixture, const std::string& dir, const std::string& name,
                               const TestBatching& batching, const std::vector<std::string>& labels) {
  ModelDirectory model;
  try {
    model = LoadFixtureModel(fixture);
  } catch (const std::exception& e) {
    return absl::NotFoundError(absl::StrCat("fixture ", fixture, ": ", e.what()));
  }
  model.config.set_name(name);
  ApplyBatching(batching, &model.config);
  return WriteModelDirectory(dir, model.config, model.weights, labels);
}

}  // namespace

absl::StatusOr<std::string> WriteTestModelRepository(const std::string& root, const TestRepositoryOptions& options) {
  absl::Status status = WriteFixtureModel("ddpmpp_cond_tiny", root + "/cond", "cond", options.cond, CondClassNames());
  if (!status.ok()) return status;
  status = WriteFixtureModel("ddpmpp_cifar_tiny", root + "/uncond", "uncond", options.uncond, {});
  if (!status.ok()) return status;
  return root;
}

// ---------------------------------------------------------------------------
// Ports

namespace {

int BindAnyPort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

int PortOf(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return 0;
  return ntohs(addr.sin_port);
}

}  // namespace

int FreePort() {
  const int fd = BindAnyPort();
  if (fd < 0) return 0;
  const int port = PortOf(fd);
  close(fd);
  return port;
}

std::pair<int, int> TwoFreePorts() {
  // Both sockets stay bound until both ports are known, so they differ.
  const int a = BindAnyPort(), b = BindAnyPort();
  const std::pair<int, int> ports{a < 0 ? 0 : PortOf(a), b < 0 ? 0 : PortOf(b)};
  if (a >= 0) close(a);
  if (b >= 0) close(b);
  return ports;
}

// ---------------------------------------------------------------------------
// ServerProcess

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(const Options& options) {
  const std::string log_dir = options.log_dir.empty() ? fs::temp_directory_path().string() : options.log_dir;
  std::string last_error;
  for (int attempt = 0; attempt < 4; ++attempt) {
    const auto [port, metrics_port] = TwoFreePorts();
    if (port == 0 || metrics_port == 0) return absl::UnavailableError("no free ports");
    std::unique_ptr<ServerProcess> server(new ServerProcess());
    server->port_ = port;
    server->metrics_port_ = metrics_port;
    server->log_path_ = absl::StrCat(log_dir, "/server-", port, ".log");

    const char* binary_override = std::getenv("TCM_SERVER_BIN");
    const std::string binary = binary_override && *binary_override ? binary_override : TCM_SERVER_BIN;
    std::vector<std::string> args = {
        binary,           "--model_repository",         options.repository, "--port", std::to_string(port),
        "--metrics_port", std::to_string(metrics_port), "--http_port",      "0"};
    args.insert(args.end(), options.extra_flags.begin(), options.extra_flags.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e)
      if (std::strncmp(*e, "TCM_TEST_", 9) != 0) env_strings.push_back(*e);
    if (!options.batch_gate_file.empty()) env_strings.push_back("TCM_TEST_BATCH_GATE=" + options.batch_gate_file);
    if (!options.control_gate_file.empty()) env_strings.push_back("TCM_TEST_CONTROL_GATE=" + options.control_gate_file);
    std::vector<char*> envp;
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);

    const int log_fd = open(server->log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (log_fd < 0) return absl::InternalError(absl::StrCat(server->log_path_, ": ", std::strerror(errno)));
    const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) {
      close(log_fd);
      if (null_fd >= 0) close(null_fd);
      return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
    }
    if (pid == 0) {
      // Child: async-signal-safe calls only until exec.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(126);
      if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
      dup2(log_fd, STDOUT_FILENO);
      dup2(log_fd, STDERR_FILENO);
      execve(argv[0], argv.data(), envp.data());
      _exit(127);
    }
    close(log_fd);
    if (null_fd >= 0) close(null_fd);
    server->pid_ = pid;

    if (!options.wait_until_serving) return server;
    absl::Status serving = server->WaitUntilServing(options.startup_timeout_seconds);
    if (serving.ok()) return server;
    last_error = std::string(serving.message());
    // A port taken between FreePort() and the server's bind: try others.
    const std::string log = server->Log();
    if (server->Running() || log.find("cannot listen") == std::string::npos) return serving;
  }
  return absl::UnavailableError(absl::StrCat("tcm-server did not start after 4 attempts: ", last_error));
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0 && !reaped_) {
    kill(pid_, SIGKILL);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
  }
}

std::string ServerProcess::address() const { return absl::StrCat("127.0.0.1:", port_); }

std::shared_ptr<grpc::Channel> ServerProcess::NewChannel() const {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // Quick reconnects. (Not GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: it is also the
  // connect timeout, and a busy server can take longer than that to accept.)
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 250);
  args.SetMaxReceiveMessageSize(64 << 20);
  return grpc::CreateCustomChannel(address(), grpc::InsecureChannelCredentials(), args);
}

bool ServerProcess::Running() {
  if (pid_ <= 0 || reaped_) return false;
  int status = 0;
  const pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    wait_status_ = status;
    return false;
  }
  return r == 0;
}

void ServerProcess::Signal(int signal_number) {
  if (pid_ > 0 && !reaped_) kill(pid_, signal_number);
}

absl::StatusOr<int> ServerProcess::WaitExit(double timeout_seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
  while (Running()) {
    if (std::chrono::steady_clock::now() > deadline)
      return absl::DeadlineExceededError(
          absl::StrCat("tcm-server (pid ", pid_, ") still running after ", timeout_seconds, " s"));
    SleepMs(10);
  }
  if (!reaped_) return absl::FailedPreconditionError("tcm-server was never started");
  return wait_status_;
}

absl::StatusOr<int> ServerProcess::Stop(double timeout_seconds) {
  Signal(SIGTERM);
  return WaitExit(timeout_seconds);
}

absl::Status ServerProcess::WaitUntilServing(double timeout_seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
  std::string last = "no answer yet";
  while (std::chrono::steady_clock::now() < deadline) {
    if (!Running())
      return absl::UnavailableError(
          absl::StrCat("tcm-server ", DescribeWaitStatus(wait_status_), " before serving; log:\n", Tail(Log())));
    // A fresh channel each time, like a probe: no reconnect backoff to wait out.
    HealthAnswer answer = CheckHealth(NewChannel(), "", 5.0);
    if (answer.status.ok() && answer.serving == grpc::health::v1::HealthCheckResponse::SERVING) return absl::OkStatus();
    last = answer.status.ok() ? grpc::health::v1::HealthCheckResponse::ServingStatus_Name(answer.serving)
                              : answer.status.error_message();
    SleepMs(50);
  }
  return absl::DeadlineExceededError(
      absl::StrCat("tcm-server not SERVING after ", timeout_seconds, " s (last: ", last, "); log:\n", Tail(Log())));
}

std::string ServerProcess::Log() const {
  std::ifstream in(log_path_, std::ios::binary);
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// ---------------------------------------------------------------------------
// gRPC

void FileGate::Close() { std::ofstream(path_).put('x'); }

void FileGate::Open() {
  std::error_code ec;
  fs::remove(path_, ec);
}

std::chrono::system_clock::time_point DeadlineIn(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(seconds));
}

HealthAnswer CheckHealth(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                         double timeout_seconds) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(timeout_seconds));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  HealthAnswer answer;
  answer.status = stub->Check(&context, request, &response);
  if (answer.status.ok()) answer.serving = response.status();
  return answer;
}

v1::GenerateRequest MakeRequest(const std::string& model, std::optional<int64_t> class_label, unsigned steps,
                                unsigned num_images, std::optional<uint64_t> seed, v1::ImageFormat format) {
  v1::GenerateRequest request;
  request.set_model(model);
  if (class_label) request.set_class_label(*class_label);
  request.set_steps(steps);
  request.set_num_images(num_images);
  if (seed) request.set_seed(*seed);
  request.set_format(format);
  return request;
}

GenerateResult CallGenerate(v1::TcmService::Stub& stub, const v1::GenerateRequest& request, double timeout_seconds,
                            grpc::ClientContext* context) {
  grpc::ClientContext own_context;
  if (context == nullptr) context = &own_context;
  context->set_deadline(DeadlineIn(timeout_seconds));
  GenerateResult result;
  const auto start = std::chrono::steady_clock::now();
  result.status = stub.Generate(context, request, &result.response);
  result.finished = std::chrono::steady_clock::now();
  result.seconds = std::chrono::duration<double>(result.finished - start).count();
  return result;
}

ImageDiff CompareImages(const v1::GenerateResponse& a, const v1::GenerateResponse& b) {
  ImageDiff diff;
  if (a.images_size() != b.images_size()) {
    diff.shape_error = absl::StrCat("image counts differ: ", a.images_size(), " vs ", b.images_size());
    return diff;
  }
  for (int i = 0; i < a.images_size(); ++i) {
    const v1::Image& x = a.images(i);
    const v1::Image& y = b.images(i);
    if (x.index() != y.index() || x.width() != y.width() || x.height() != y.height() || x.channels() != y.channels() ||
        x.class_label() != y.class_label() || x.seed() != y.seed() || x.format() != y.format() ||
        x.data().size() != y.data().size()) {
      diff.shape_error =
          absl::StrCat("image ", i, " differs in its description: [index ", x.index(), " ", x.width(), "x", x.height(),
                       "x", x.channels(), " class ", x.class_label(), " seed ", x.seed(), " bytes ", x.data().size(),
                       "] vs [index ", y.index(), " ", y.width(), "x", y.height(), "x", y.channels(), " class ",
                       y.class_label(), " seed ", y.seed(), " bytes ", y.data().size(), "]");
      return diff;
    }
    for (size_t j = 0; j < x.data().size(); ++j) {
      const int d = std::abs(static_cast<int>(static_cast<uint8_t>(x.data()[j])) -
                             static_cast<int>(static_cast<uint8_t>(y.data()[j])));
      if (d != 0) ++diff.differing_bytes;
      diff.max_abs_diff = std::max(diff.max_abs_diff, d);
    }
    diff.total_bytes += static_cast<int64_t>(x.data().size());
  }
  diff.same_shape = true;
  return diff;
}

// ---------------------------------------------------------------------------
// Metrics

absl::StatusOr<HttpReply> HttpCall(int port, const std::string& method, const std::string& target,
                                   const std::string& body, double timeout_seconds) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  timeval timeout{};
  timeout.tv_sec = static_cast<time_t>(timeout_seconds);
  timeout.tv_usec = static_cast<suseconds_t>((timeout_seconds - static_cast<double>(timeout.tv_sec)) * 1e6);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const std::string why = std::strerror(errno);
    close(fd);
    return absl::UnavailableError(absl::StrCat("connect to port ", port, ": ", why));
  }
  std::string request = absl::StrCat(method, " ", target, " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
  if (!body.empty())
    absl::StrAppend(&request, "Content-Type: application/json\r\nContent-Length: ", body.size(), "\r\n");
  absl::StrAppend(&request, "\r\n", body);
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      close(fd);
      return absl::UnavailableError(absl::StrCat("send to port ", port, " failed"));
    }
    sent += static_cast<size_t>(n);
  }
  std::string reply;
  char buffer[8192];
  while (true) {
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    reply.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  const size_t header_end = reply.find("\r\n\r\n");
  if (header_end == std::string::npos || reply.size() < 12 || reply.compare(0, 5, "HTTP/") != 0)
    return absl::UnavailableError(
        absl::StrCat("incomplete HTTP answer from port ", port, " (", reply.size(), " bytes)"));
  HttpReply answer;
  answer.status = std::atoi(reply.substr(9, 3).c_str());
  answer.body = reply.substr(header_end + 4);
  return answer;
}

absl::StatusOr<std::string> FetchMetrics(int port) {
  auto reply = HttpCall(port, "GET", "/metrics", "", 10);
  if (!reply.ok()) return reply.status();
  if (reply->status != 200) return absl::UnavailableError(absl::StrCat("/metrics answered: ", reply->status));
  return reply->body;
}

std::vector<MetricSample> ParseMetrics(const std::string& text) {
  std::vector<MetricSample> samples;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    MetricSample sample;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    sample.name = line.substr(0, i);
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const size_t eq = line.find('=', i);
        if (eq == std::string::npos || eq + 1 >= line.size() || line[eq + 1] != '"') break;
        std::string key = line.substr(i, eq - i);
        std::string value;
        size_t j = eq + 2;
        for (; j < line.size() && line[j] != '"'; ++j) {
          if (line[j] == '\\' && j + 1 < line.size()) {
            ++j;
            value.push_back(line[j] == 'n' ? '\n' : line[j]);
          } else {
            value.push_back(line[j]);
          }
        }
        sample.labels[key] = value;
        i = j + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      ++i;  // '}'
    }
    while (i < line.size() && line[i] == ' ') ++i;
    if (i >= line.size()) continue;
    const std::string value = line.substr(i, line.find(' ', i) - i);
    if (value == "+Inf") {
      sample.value = HUGE_VAL;
    } else if (value == "-Inf") {
      sample.value = -HUGE_VAL;
    } else {
      char* end = nullptr;
      sample.value = std::strtod(value.c_str(), &end);
      if (end == value.c_str()) continue;
    }
    samples.push_back(std::move(sample));
  }
  return samples;
}

std::optional<double> MetricValue(const std::string& text, const std::string& name,
                                  const std::map<std::string, std::string>& labels) {
  for (const auto& s : ParseMetrics(text))
    if (s.name == name && s.labels == labels) return s.value;
  return std::nullopt;
}

double MetricOrZero(const std::string& text, const std::string& name,
                    const std::map<std::string, std::string>& labels) {
  return MetricValue(text, name, labels).value_or(0.0);
}

double MetricSum(const std::string& text, const std::string& name, const std::map<std::string, std::string>& subset) {
  double sum = 0;
  for (const auto& s : ParseMetrics(text)) {
    if (s.name != name) continue;
    bool match = true;
    for (const auto& [k, v] : subset) {
      auto it = s.labels.find(k);
      if (it == s.labels.end() || it->second != v) match = false;
    }
    if (match) sum += s.value;
  }
  return sum;
}

absl::StatusOr<std::string> WaitForMetrics(int port, const std::function<bool(const std::string&)>& done,
                                           double timeout_seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
  std::string last;
  while (true) {
    auto text = FetchMetrics(port);
    if (text.ok()) {
      if (done(*text)) return *text;
      last = *text;
    } else {
      last = std::string(text.status().message());
    }
    if (std::chrono::steady_clock::now() > deadline) break;
    SleepMs(5);
  }
  return absl::DeadlineExceededError(
      absl::StrCat("metrics condition not reached within ", timeout_seconds, " s; last scrape:\n", Tail(last, 8000)));
}

}  // namespace tcm::testing
