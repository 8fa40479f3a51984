// Callers that do not wait for their answers: streams cancelled at random
// moments or given deadlines shorter than their work, health Watch streams
// cancelled while the server changes state and shuts down. Each test drives a
// real tcm-server child process over gRPC on loopback and then checks that it
// is alive and answers a well-behaved call in full (or, after SIGTERM, that it
// exits 0). Counts of calls, not durations, bound every loop.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

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
      [](const std::string& m) { return MetricOrZero(m, "tcm_requests_in_flight", {{"model", "cond"}}) == 0; }, 60);
  EXPECT_TRUE(idle.ok()) << idle.status();
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
    watchers.emplace_back(ChurnHealthWatches, channel, services[w % services.size()], 7 + w, std::cref(stop),
                          &watches);
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
      [](const std::string& m) { return MetricOrZero(m, "tcm_requests_in_flight", {{"model", "cond"}}) == 1; }, 60);
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
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
      << "wait status " << *status << "; log:\n" << server->Log();
}

}  // namespace
}  // namespace tcm
