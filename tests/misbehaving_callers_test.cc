// Callers that do not wait for their answers: streams cancelled at random
// moments or given deadlines shorter than their work, seeded mixed traffic
// with malformed calls and client processes killed mid-call, health Watch
// streams cancelled while the server changes state and shuts down. Each test
// drives a real tcm-server child process over gRPC on loopback and then checks
// that it is alive and answers a well-behaved call in full (or, after SIGTERM,
// that it exits 0). Counts of calls, not durations, bound every loop.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "client/mixed_traffic.h"
#include "tests/server_fixture.h"
#include "tests/server_test_util.h"

namespace tcm {
namespace {

using grpc::StatusCode;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using testing::MakeRequest;
using testing::MetricOrZero;
using testing::ServerProcess;

using MisbehavingCallersTest = testing::ServerFixture;

// How a stream's caller misbehaves.
enum class Misbehaviour { kCancelAfterDelay, kCancelAfterFirstImage, kShortDeadline, kNone };

struct StreamOutcome {
  grpc::Status status;
  size_t images = 0;
};

// One GenerateStream call, ended by its caller as `how` says; `delay_ms` is
// the cancel delay or the deadline.
StreamOutcome MisbehavingStream(v1::TcmService::Stub& stub, const v1::GenerateRequest& request, Misbehaviour how,
                                int delay_ms) {
  grpc::ClientContext context;
  context.set_deadline(testing::DeadlineIn(how == Misbehaviour::kShortDeadline ? delay_ms / 1000.0 : 300));
  std::thread canceller;
  if (how == Misbehaviour::kCancelAfterDelay) {
    canceller = std::thread([&context, delay_ms] {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
      context.TryCancel();
    });
  }
  StreamOutcome outcome;
  auto reader = stub.GenerateStream(&context, request);
  for (v1::GenerateStreamResponse message; reader->Read(&message);) {
    ++outcome.images;
    if (how == Misbehaviour::kCancelAfterFirstImage) context.TryCancel();
  }
  outcome.status = reader->Finish();
  if (canceller.joinable()) canceller.join();  // `context` outlives its TryCancel
  return outcome;
}

// The server answers a plain Generate and a plain GenerateStream in full.
void ExpectServesInFull(ServerProcess& server) {
  ASSERT_TRUE(server.Running()) << "tcm-server died; log:\n" << server.Log();
  auto channel = server.NewChannel();
  const auto health = testing::CheckHealth(channel, "", 10);
  ASSERT_TRUE(health.status.ok()) << health.status.error_message();
  EXPECT_EQ(health.serving, HealthCheckResponse::SERVING);

  auto stub = v1::TcmService::NewStub(channel);
  const v1::GenerateRequest request = MakeRequest("cond", 4, 2, 3, 11);
  auto unary = testing::CallGenerate(*stub, request, 120);
  ASSERT_TRUE(unary.status.ok()) << unary.status.error_message();
  EXPECT_EQ(unary.response.images_size(), 3);
  const StreamOutcome stream = MisbehavingStream(*stub, request, Misbehaviour::kNone, 0);
  ASSERT_TRUE(stream.status.ok()) << stream.status.error_message();
  EXPECT_EQ(stream.images, 3u);
}

// The crash this guards against: a stream's reactor finished its call while
// holding its own mutex, and gRPC deleted the reactor (and the mutex) before
// the lock was released. It took a few hundred such calls to show.
TEST_F(MisbehavingCallersTest, CancelledAndTimedOutStreamsLeaveTheServerServing) {
  auto server = StartServer({}, {"--workers", "2"});
  ASSERT_TRUE(server);
  auto channel = server->NewChannel();
  auto stub = v1::TcmService::NewStub(channel);

  constexpr int kCallers = 8, kCallsEach = 48;
  std::mutex mu;
  std::map<StatusCode, int> codes;
  std::vector<std::string> unexpected;
  std::vector<std::thread> callers;
  for (int c = 0; c < kCallers; ++c) {
    callers.emplace_back([&, c] {
      std::mt19937 rng(1000 + c);
      for (int i = 0; i < kCallsEach; ++i) {
        const auto how = static_cast<Misbehaviour>((c + i) % 3);
        const int delay_ms = std::uniform_int_distribution<int>(0, 40)(rng);
        const unsigned images = std::uniform_int_distribution<unsigned>(1, 8)(rng);
        const v1::GenerateRequest request = MakeRequest("cond", i % 10, 2, images, 100 * c + i);
        const StreamOutcome outcome = MisbehavingStream(*stub, request, how, std::max(delay_ms, 1));
        std::lock_guard<std::mutex> lock(mu);
        ++codes[outcome.status.error_code()];
        const StatusCode code = outcome.status.error_code();
        const bool fine = code == StatusCode::CANCELLED || code == StatusCode::DEADLINE_EXCEEDED ||
                          (code == StatusCode::OK && outcome.images == images);
        if (!fine)
          unexpected.push_back(std::to_string(code) + " '" + outcome.status.error_message() + "' after " +
                               std::to_string(outcome.images) + " of " + std::to_string(images) + " images");
      }
    });
  }
  for (auto& t : callers) t.join();

  std::printf("[ callers ] %d streams: %d OK, %d CANCELLED, %d DEADLINE_EXCEEDED\n", kCallers * kCallsEach,
              codes[StatusCode::OK], codes[StatusCode::CANCELLED], codes[StatusCode::DEADLINE_EXCEEDED]);
  EXPECT_TRUE(unexpected.empty()) << unexpected.size() << " streams ended unexpectedly, first: " << unexpected[0];
  EXPECT_GT(codes[StatusCode::CANCELLED] + codes[StatusCode::DEADLINE_EXCEEDED], 0);
  ExpectServesInFull(*server);

  // Every abandoned call has ended on the server too: nothing is left in flight.
  auto idle = testing::WaitForMetrics(
      server->metrics_port(),
      [](const std::string& m) {
        return MetricOrZero(m, "tcm_requests_in_flight", {{"model", "cond"}}) == 0;
      },
      60);
  EXPECT_TRUE(idle.ok()) << idle.status();
  StopCleanly(*server);
}

// Starts `count` tcm-client processes, one after another, each asking model
// "uncond" (which the other traffic leaves alone) for 64 2-step images, and
// kills each with SIGKILL once the server has its call in flight; then waits
// until the server has seen that call end. Returns how many were killed
// mid-call (a client whose call finished before the kill does not count).
int KillClientsMidCall(const ServerProcess& server, int count) {
  auto uncond_in_flight = [&server](double n) {
    return testing::WaitForMetrics(
        server.metrics_port(),
        [n](const std::string& m) {
          return MetricOrZero(m, "tcm_requests_in_flight", {{"model", "uncond"}}) == n;
        },
        60);
  };
  int killed = 0;
  for (int i = 0; i < count; ++i) {
    std::vector<std::string> args = {
        TCM_CLIENT_BIN, "--server", server.address(),        "--model", "uncond",         "--steps",   "2",  "--num",
        "64",           "--seed",   std::to_string(500 + i), "--out",   "/dev/null/none", "--timeout", "300"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t pid = fork();
    if (pid == 0) {
      execv(argv[0], argv.data());
      _exit(127);
    }
    if (pid < 0) continue;
    const bool in_flight = uncond_in_flight(1).ok();
    killed += in_flight && kill(pid, SIGKILL) == 0;
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(uncond_in_flight(0).ok()) << "the server did not end the call of a killed client";
  }
  return killed;
}

// An error that echoes a caller's long string (here a model name) keeps its
// own code: its message is cut to fit gRPC's header limit, beyond which the
// client reads RESOURCE_EXHAUSTED instead. (Deadlines past the year 2262:
// client.cli, since gRPC's own clients cap the timeout they send.)
TEST_F(MisbehavingCallersTest, ErrorsEchoingLongNamesKeepTheirCode) {
  auto server = StartServer({}, {});
  ASSERT_TRUE(server);
  auto channel = server->NewChannel();
  auto stub = v1::TcmService::NewStub(channel);

  v1::GenerateResponse response;
  const std::string long_name(9000, 'm');
  grpc::ClientContext named;
  named.set_deadline(testing::DeadlineIn(60));
  const grpc::Status status = stub->Generate(&named, MakeRequest(long_name, 3, 1, 1, 7), &response);
  EXPECT_EQ(status.error_code(), StatusCode::NOT_FOUND) << status.error_message().substr(0, 200);
  EXPECT_LE(status.error_message().size(), 1024u);
  EXPECT_NE(status.error_message().find("(cut at "), std::string::npos) << status.error_message();
  const auto health = testing::CheckHealth(channel, long_name, 10);
  EXPECT_EQ(health.status.error_code(), StatusCode::NOT_FOUND) << health.status.error_message().substr(0, 200);
  ExpectServesInFull(*server);
}

// Mixed traffic from a fixed, printed seed (TCM_TEST_SEED replays another):
// unary calls and streams, 1 and 2 steps, cancelled at random moments, given
// deadlines shorter than their work, malformed; meanwhile client processes
// are killed mid-call. Every call must end with a code its kind allows, the
// server must serve in full afterwards, and its image ledger must balance:
// every accepted image generated or dropped with a reason.
TEST_F(MisbehavingCallersTest, RandomizedCallersAndKilledClientsKeepTheImageLedger) {
  const char* env_seed = std::getenv("TCM_TEST_SEED");
  const uint64_t seed = env_seed != nullptr ? std::strtoull(env_seed, nullptr, 10) : 20261202;
  std::printf("[ seed ] %llu (replay with TCM_TEST_SEED=%llu)\n", static_cast<unsigned long long>(seed),
              static_cast<unsigned long long>(seed));
  auto server = StartServer({}, {"--workers", "2"});
  ASSERT_TRUE(server);
  auto channel = server->NewChannel();
  auto stub = v1::TcmService::NewStub(channel);

  traffic::TrafficOptions options;
  options.model = "cond";
  options.num_classes = 10;
  options.max_images = 6;
  options.misbehaving_fraction = 0.6;
  std::atomic<bool> never{false};
  int killed = 0;
  std::thread killer([&] { killed = KillClientsMidCall(*server, 8); });
  const traffic::TrafficReport report =
      traffic::RunTraffic(*stub, seed, /*callers=*/6, /*calls_per_caller=*/40, options, never);
  killer.join();
  std::printf("[ traffic ] %s[ killed ] %d tcm-client processes mid-call\n", report.Summary().c_str(), killed);
  EXPECT_EQ(report.unexpected_count, 0) << report.Summary();
  EXPECT_EQ(report.calls, 240);
  EXPECT_GT(report.CallsWithCode("OK"), 0);
  EXPECT_GT(report.CallsWithCode("CANCELLED"), 0);
  EXPECT_GT(report.CallsWithCode("INVALID_ARGUMENT") + report.CallsWithCode("NOT_FOUND"), 0);
  EXPECT_GT(killed, 0) << "no client was killed while its call was in flight";
  ExpectServesInFull(*server);

  // Once nothing is in flight or queued, every accepted image is accounted for.
  auto balanced = testing::WaitForMetrics(
      server->metrics_port(),
      [](const std::string& m) {
        const double accepted = testing::MetricSum(m, "tcm_images_accepted_total");
        const double ended =
            testing::MetricSum(m, "tcm_images_generated_total") + testing::MetricSum(m, "tcm_images_dropped_total");
        return testing::MetricSum(m, "tcm_requests_in_flight") == 0 && testing::MetricSum(m, "tcm_queue_depth") == 0 &&
               accepted == ended;
      },
      60);
  ASSERT_TRUE(balanced.ok()) << balanced.status();
  const std::string& m = *balanced;
  std::printf(
      "[ ledger ] accepted %.0f = generated %.0f + dropped %.0f (cond: cancelled %.0f, deadline %.0f, failed %.0f)\n",
      testing::MetricSum(m, "tcm_images_accepted_total"), testing::MetricSum(m, "tcm_images_generated_total"),
      testing::MetricSum(m, "tcm_images_dropped_total"),
      MetricOrZero(m, "tcm_images_dropped_total", {{"model", "cond"}, {"reason", "cancelled"}}),
      MetricOrZero(m, "tcm_images_dropped_total", {{"model", "cond"}, {"reason", "deadline"}}),
      MetricOrZero(m, "tcm_images_dropped_total", {{"model", "cond"}, {"reason", "failed"}}));
  EXPECT_GT(MetricOrZero(m, "tcm_images_dropped_total", {{"model", "cond"}, {"reason", "cancelled"}}), 0);
  EXPECT_GT(MetricOrZero(m, "tcm_images_dropped_total", {{"model", "uncond"}, {"reason", "cancelled"}}), 0)
      << "the killed clients' remaining images were dropped";
  EXPECT_EQ(testing::MetricSum(m, "tcm_images_dropped_total", {{"reason", "failed"}}), 0)
      << "no batch failed and no call was refused after it was queued";
  // The server refused exactly the malformed calls the callers sent, each with its code.
  EXPECT_EQ(testing::MetricSum(m, "tcm_requests_total", {{"code", "INVALID_ARGUMENT"}}),
            report.CallsWithCode("INVALID_ARGUMENT"));
  EXPECT_EQ(testing::MetricSum(m, "tcm_requests_total", {{"code", "NOT_FOUND"}}), report.CallsWithCode("NOT_FOUND"));
  StopCleanly(*server);
}

// Opens Watch streams on `service` one after another until `stop`, each
// cancelled after a random delay or after a random number of updates.
void ChurnHealthWatches(const std::shared_ptr<grpc::Channel>& channel, const std::string& service, unsigned seed,
                        const std::atomic<bool>& stop, std::atomic<int>* watches) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  std::mt19937 rng(seed);
  while (!stop) {
    grpc::ClientContext context;
    context.set_deadline(testing::DeadlineIn(30));
    const int delay_ms = std::uniform_int_distribution<int>(0, 20)(rng);
    const int reads = std::uniform_int_distribution<int>(1, 3)(rng);
    std::thread canceller([&context, delay_ms] {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
      context.TryCancel();
    });
    HealthCheckRequest request;
    request.set_service(service);
    auto reader = stub->Watch(&context, request);
    HealthCheckResponse response;
    for (int r = 0; r < reads && reader->Read(&response); ++r) {
    }
    context.TryCancel();
    reader->Finish();
    canceller.join();
    ++*watches;
  }
}

TEST_F(MisbehavingCallersTest, HealthWatchesCancelledWhileTheServerStartsAndStops) {
  testing::BatchGate gate(dir_.path());  // holds work to drain until SIGTERM has been taken
  auto server = StartServer({}, {"--drain_timeout", "60"}, /*wait_until_serving=*/false, &gate);
  ASSERT_TRUE(server);
  auto channel = server->NewChannel();

  std::atomic<bool> stop{false};
  std::atomic<int> watches{0};
  std::vector<std::thread> watchers;
  const std::vector<std::string> services = {"", "cond", "uncond", "no-such-model"};
  for (unsigned w = 0; w < 6; ++w)
    watchers.emplace_back(ChurnHealthWatches, channel, services[w % services.size()], 7 + w, std::cref(stop), &watches);
  auto stop_watchers = [&] {
    stop = true;
    for (auto& t : watchers) t.join();
    watchers.clear();
  };

  // Start-up: every name turns SERVING while the watches come and go.
  const absl::Status serving = server->WaitUntilServing(180);
  if (!serving.ok()) stop_watchers();
  ASSERT_TRUE(serving.ok()) << serving;
  const int before = watches;
  while (watches < before + 200 && server->Running()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ExpectServesInFull(*server);

  // Shutdown with work to drain: health turns NOT_SERVING, every stream ends.
  auto stub = v1::TcmService::NewStub(channel);
  gate.Close();
  std::thread work([&] { testing::CallGenerate(*stub, MakeRequest("cond", 1, 2, 16, 5), 120); });
  auto queued = testing::WaitForMetrics(
      server->metrics_port(),
      [](const std::string& m) {
        return MetricOrZero(m, "tcm_requests_in_flight", {{"model", "cond"}}) == 1;
      },
      60);
  EXPECT_TRUE(queued.ok()) << queued.status();
  server->Signal(SIGTERM);
  for (int i = 0; i < 6000 && server->Log().find("draining") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  gate.Open();
  auto status = server->WaitExit(120);
  stop_watchers();
  work.join();
  std::printf("[ health ] %d Watch streams opened and cancelled\n", watches.load());
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "wait status " << *status << "; log:\n"
                                                               << server->Log();
}

}  // namespace
}  // namespace tcm
