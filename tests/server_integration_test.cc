// Integration tests: a real tcm-server child process, called over gRPC on
// loopback, with its real Prometheus endpoint. Every test starts its own
// server(s) on free ports with its own model repository (the shared reference
// fixtures "ddpmpp_cond_tiny" as model "cond" and "ddpmpp_cifar_tiny" as
// "uncond"), so tests are independent of one another.
//
// Timing is used only in relative terms (a rejected call answers before a
// long backlog drains); every wait has a generous timeout for slow machines.
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/cpu_features.h"
#include "inference/grpc_predict_v2.grpc.pb.h"
#include "tests/server_fixture.h"
#include "tests/server_test_util.h"

namespace tcm {
namespace {

using grpc::StatusCode;
using grpc::health::v1::HealthCheckResponse;
using testing::CallGenerate;
using testing::CheckHealth;
using testing::CompareImages;
using testing::FetchMetrics;
using testing::GenerateResult;
using testing::ImageDiff;
using testing::MakeRequest;
using testing::MetricOrZero;
using testing::MetricSum;
using testing::MetricValue;
using testing::ServerProcess;
using testing::TestRepositoryOptions;
using testing::WaitForMetrics;
using Labels = std::map<std::string, std::string>;

constexpr int kSide = 32, kChannels = 3;
constexpr size_t kRawBytes = kSide * kSide * kChannels;

std::string CodeName(StatusCode code) {
  static const char* const kNames[] = {
      "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
      "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
      "DATA_LOSS", "UNAUTHENTICATED"};
  const int c = static_cast<int>(code);
  return c >= 0 && c <= 16 ? kNames[c] : absl::StrCat("code ", c);
}

std::string Describe(const grpc::Status& status) {
  return absl::StrCat(CodeName(status.error_code()), ": ", status.error_message());
}

template <typename T>
bool IsReady(const std::future<T>& f) {
  return f.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
}

// The images of `response` are a complete, well-formed answer to `request`.
void ExpectCompleteAnswer(const v1::GenerateRequest& request, const v1::GenerateResponse& response,
                          const std::string& what) {
  SCOPED_TRACE(what);
  const unsigned n = request.num_images() == 0 ? 1 : request.num_images();
  ASSERT_EQ(response.images_size(), static_cast<int>(n));
  if (!request.model().empty()) EXPECT_EQ(response.model(), request.model());
  if (request.steps() != 0) EXPECT_EQ(response.steps(), request.steps());
  if (request.has_seed()) EXPECT_EQ(response.seed(), request.seed());
  for (unsigned i = 0; i < n; ++i) {
    const v1::Image& image = response.images(static_cast<int>(i));
    EXPECT_EQ(image.index(), i);
    EXPECT_EQ(image.width(), static_cast<uint32_t>(kSide));
    EXPECT_EQ(image.height(), static_cast<uint32_t>(kSide));
    EXPECT_EQ(image.channels(), static_cast<uint32_t>(kChannels));
    EXPECT_EQ(image.seed(), response.seed());
    EXPECT_EQ(image.format(), request.format());
    if (request.has_class_label()) EXPECT_EQ(image.class_label(), request.class_label());
    if (request.format() == v1::IMAGE_FORMAT_RAW) {
      EXPECT_EQ(image.data().size(), kRawBytes);
    } else {
      EXPECT_EQ(image.data().substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
    }
  }
}

// The same image bytes (an image does not depend on its batch, at any
// precision); records how many bytes differ.
void ExpectSameImages(const v1::GenerateResponse& expected, const v1::GenerateResponse& actual,
                      const std::string& what) {
  const ImageDiff diff = CompareImages(expected, actual);
  ASSERT_TRUE(diff.same_shape) << what << ": " << diff.shape_error;
  ::testing::Test::RecordProperty(what + "_differing_bytes", std::to_string(diff.differing_bytes));
  std::printf("[ determinism ] %s: %lld of %lld bytes differ, max |diff| = %d\n", what.c_str(),
              static_cast<long long>(diff.differing_bytes), static_cast<long long>(diff.total_bytes),
              diff.max_abs_diff);
  EXPECT_EQ(diff.differing_bytes, 0) << what << ": " << diff.differing_bytes << " of " << diff.total_bytes
                                     << " bytes differ, by up to " << diff.max_abs_diff;
}

using ServerIntegrationTest = testing::ServerFixture;

// ---------------------------------------------------------------------------
// 1. An image depends on (model, class, steps, seed, index) alone.

TEST_F(ServerIntegrationTest, SameRequestGivesSameImagesAloneAndUnderConcurrentLoad) {
  auto server = StartServer({}, {"--max_batch_size", "16", "--max_queue_delay_us", "5000"});
  ASSERT_TRUE(server);
  auto stub = v1::TcmService::NewStub(server->NewChannel());
  const v1::GenerateRequest target = MakeRequest("cond", 3, 2, 4, 42);

  GenerateResult quiet1 = CallGenerate(*stub, target);
  ASSERT_TRUE(quiet1.status.ok()) << Describe(quiet1.status);
  ExpectCompleteAnswer(target, quiet1.response, "quiet 1");
  GenerateResult quiet2 = CallGenerate(*stub, target);
  ASSERT_TRUE(quiet2.status.ok()) << Describe(quiet2.status);
  const ImageDiff repeat = CompareImages(quiet1.response, quiet2.response);
  ASSERT_TRUE(repeat.same_shape) << repeat.shape_error;
  EXPECT_EQ(repeat.differing_bytes, 0) << "the same request twice on a quiet server must give identical bytes";
  // The images are not all alike: each index draws its own noise.
  EXPECT_NE(quiet1.response.images(0).data(), quiet1.response.images(1).data());

  // Six other requests flood the server, staggered so that batches mix new
  // images with images returning for their second step, and rows of
  // different requests; the target request lands in the middle.
  std::vector<v1::GenerateRequest> others;
  for (int i = 0; i < 6; ++i) {
    std::optional<int64_t> label;
    if (i % 2 == 0) label = (i + 5) % 10;
    others.push_back(MakeRequest("cond", label, i == 4 ? 1 : 2, 5 + i % 3, 1000 + i));
  }
  std::vector<std::future<GenerateResult>> flood;
  std::future<GenerateResult> loaded;
  for (size_t i = 0; i < others.size(); ++i) {
    flood.push_back(std::async(std::launch::async, [&, i] { return CallGenerate(*stub, others[i]); }));
    if (i == 2) loaded = std::async(std::launch::async, [&] { return CallGenerate(*stub, target); });
    std::this_thread::sleep_for(std::chrono::milliseconds(8));
  }
  for (size_t i = 0; i < flood.size(); ++i) {
    GenerateResult r = flood[i].get();
    ASSERT_TRUE(r.status.ok()) << "flood request " << i << ": " << Describe(r.status);
    ExpectCompleteAnswer(others[i], r.response, absl::StrCat("flood request ", i));
  }
  GenerateResult under_load = loaded.get();
  ASSERT_TRUE(under_load.status.ok()) << Describe(under_load.status);
  ExpectCompleteAnswer(target, under_load.response, "under load");
  ExpectSameImages(quiet1.response, under_load.response, "alone_vs_under_load");

  // The load did batch rows together (else the comparison proves little).
  const std::string metrics = Metrics(*server);
  const double batches = MetricOrZero(metrics, "tcm_batch_size_count", {{"model", "cond"}});
  const double rows = MetricOrZero(metrics, "tcm_batch_size_sum", {{"model", "cond"}});
  const double expected_rows = 3 * (2 * 4) + [&] {
    double r = 0;
    for (const auto& o : others) r += o.steps() * o.num_images();
    return r;
  }();
  EXPECT_EQ(rows, expected_rows) << "every image step is one batch row";
  EXPECT_GT(rows, batches) << "no batch held more than one row";
  std::printf("[ determinism ] cond: %.0f rows in %.0f batches\n", rows, batches);
  StopCleanly(*server);
}

// 2. The same request on one worker, on two single-threaded workers, and
// with 1- and 2-step requests batched apart.
TEST_F(ServerIntegrationTest, SameImagesOnOneAndTwoWorkersAndWithoutStepLevelBatching) {
  const std::vector<v1::GenerateRequest> requests = {MakeRequest("cond", 3, 2, 4, 42),
                                                     MakeRequest("uncond", std::nullopt, 2, 3, 7),
                                                     MakeRequest("cond", std::nullopt, 1, 3, 99),
                                                     MakeRequest("cond", 7, 2, 2, 1234567890123ULL),
                                                     MakeRequest("uncond", std::nullopt, 1, 4, 0),
                                                     MakeRequest("cond", 0, 2, 5, 5)};
  struct Setup {
    std::string name;
    int workers;
    std::vector<std::string> flags;
  };
  const std::vector<Setup> setups = {{"one_worker", 1, {"--workers", "1"}},
                                     {"two_workers", 2, {"--workers", "2", "--intra_op_threads", "1"}},
                                     {"kinds_batched_apart", 1, {"--workers", "1", "--step_level_batching=false"}}};
  std::vector<std::vector<v1::GenerateResponse>> answers;
  for (const Setup& setup : setups) {
    auto server = StartServer({}, setup.flags);
    ASSERT_TRUE(server);
    auto stub = v1::TcmService::NewStub(server->NewChannel());
    // Concurrently and staggered, so that with two workers both of them run batches.
    std::vector<std::future<GenerateResult>> calls;
    for (const auto& r : requests) {
      calls.push_back(std::async(std::launch::async, [&stub, &r] { return CallGenerate(*stub, r); }));
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    answers.emplace_back();
    for (size_t i = 0; i < calls.size(); ++i) {
      GenerateResult r = calls[i].get();
      ASSERT_TRUE(r.status.ok()) << setup.name << ", request " << i << ": " << Describe(r.status);
      ExpectCompleteAnswer(requests[i], r.response, absl::StrCat(setup.name, ", request ", i));
      answers.back().push_back(r.response);
    }
    // Every worker ran batches (a worker's series appears with its first batch).
    const std::string metrics = Metrics(*server);
    for (int w = 0; w < setup.workers; ++w)
      EXPECT_GT(MetricOrZero(metrics, "tcm_worker_busy_seconds_total", {{"worker", std::to_string(w)}}), 0)
          << "worker " << w << " of " << setup.workers << " ran no batch";
    EXPECT_FALSE(MetricValue(metrics, "tcm_worker_busy_seconds_total", {{"worker", std::to_string(setup.workers)}}));
    StopCleanly(*server);
  }
  ASSERT_EQ(answers.size(), setups.size());
  for (size_t s = 1; s < setups.size(); ++s)
    for (size_t i = 0; i < requests.size(); ++i)
      ExpectSameImages(answers[0][i], answers[s][i], absl::StrCat("one_worker_vs_", setups[s].name, "_request_", i));
}

// ---------------------------------------------------------------------------
// 3. Bad requests: the right code, a message naming the field, and counted.

TEST_F(ServerIntegrationTest, BadRequestsGetTheRightCodeAndAreCounted) {
  auto server = StartServer({}, {"--max_images_per_request", "4"});
  ASSERT_TRUE(server);
  auto stub = v1::TcmService::NewStub(server->NewChannel());

  struct Case {
    std::string name;
    v1::GenerateRequest request;
    StatusCode code;
    std::vector<std::string> message_parts;  // the field and its allowed range
  };
  v1::GenerateRequest bad_format = MakeRequest("cond", 3, 1, 1, 1);
  bad_format.set_format(static_cast<v1::ImageFormat>(7));
  const std::vector<Case> cases = {
      {"steps 3", MakeRequest("cond", 3, 3, 1, 1), StatusCode::INVALID_ARGUMENT, {"steps", "1 or 2"}},
      {"class 10", MakeRequest("cond", 10, 1, 1, 1), StatusCode::INVALID_ARGUMENT, {"class_label", "[0, 10)"}},
      {"class -1", MakeRequest("cond", -1, 1, 1, 1), StatusCode::INVALID_ARGUMENT, {"class_label", "[0, 10)"}},
      {"class on uncond",
       MakeRequest("uncond", 0, 1, 1, 1),
       StatusCode::INVALID_ARGUMENT,
       {"class_label", "unconditional"}},
      {"5 images", MakeRequest("cond", 3, 1, 5, 1), StatusCode::INVALID_ARGUMENT, {"num_images", "at most 4"}},
      {"format 7", bad_format, StatusCode::INVALID_ARGUMENT, {"format", "7"}},
      {"model nope", MakeRequest("nope", std::nullopt, 1, 1, 1), StatusCode::NOT_FOUND, {"nope", "cond"}},
  };
  for (const auto& c : cases) {
    GenerateResult r = CallGenerate(*stub, c.request, 60);
    EXPECT_EQ(r.status.error_code(), c.code) << c.name << ": " << Describe(r.status);
    for (const auto& part : c.message_parts)
      EXPECT_NE(r.status.error_message().find(part), std::string::npos)
          << c.name << ": message should mention '" << part << "': " << r.status.error_message();
    EXPECT_EQ(r.response.images_size(), 0) << c.name;
  }
  // The streaming call validates the same way.
  {
    grpc::ClientContext context;
    context.set_deadline(testing::DeadlineIn(60));
    auto reader = stub->GenerateStream(&context, MakeRequest("cond", 3, 3, 1, 1));
    v1::GenerateStreamResponse message;
    EXPECT_FALSE(reader->Read(&message));
    const grpc::Status status = reader->Finish();
    EXPECT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(status);
    EXPECT_NE(status.error_message().find("steps"), std::string::npos) << status.error_message();
  }
  // The limit itself is allowed.
  const v1::GenerateRequest at_limit = MakeRequest("cond", 3, 1, 4, 1);
  GenerateResult ok = CallGenerate(*stub, at_limit);
  ASSERT_TRUE(ok.status.ok()) << Describe(ok.status);
  ExpectCompleteAnswer(at_limit, ok.response, "at the limit");

  const std::string metrics = Metrics(*server);
  const std::string requests = "tcm_requests_total";
  EXPECT_EQ(MetricSum(metrics, requests, {{"code", "INVALID_ARGUMENT"}, {"model", "cond"}}), 6)
      << "steps 3 (unary and streaming), class 10, class -1, 5 images, format 7";
  EXPECT_EQ(MetricOrZero(metrics, requests, {{"code", "INVALID_ARGUMENT"}, {"model", "cond"}, {"steps", "1"}}), 4)
      << "class 10, class -1, 5 images, format 7";
  EXPECT_EQ(MetricOrZero(metrics, requests, {{"code", "INVALID_ARGUMENT"}, {"model", "uncond"}, {"steps", "1"}}), 1);
  EXPECT_EQ(MetricSum(metrics, requests, {{"code", "INVALID_ARGUMENT"}}), 7);
  EXPECT_EQ(MetricSum(metrics, requests, {{"code", "NOT_FOUND"}}), 1);
  EXPECT_EQ(MetricOrZero(metrics, requests, {{"code", "NOT_FOUND"}, {"model", "unknown"}, {"steps", "1"}}), 1)
      << "unknown model names must not become label values";
  EXPECT_EQ(MetricOrZero(metrics, requests, {{"code", "OK"}, {"model", "cond"}, {"steps", "1"}}), 1);
  // Rejected calls cost nothing: only the 4 images at the limit were computed.
  EXPECT_EQ(MetricSum(metrics, "tcm_images_generated_total"), 4);
  EXPECT_EQ(MetricOrZero(metrics, "tcm_batch_size_sum", {{"model", "cond"}}), 4);
  EXPECT_EQ(MetricOrZero(metrics, "tcm_batch_size_count", {{"model", "uncond"}}), 0);
  StopCleanly(*server);
}

// Label values must stay bounded whatever clients send: a series per invalid
// `steps` value would let any client grow the metrics without limit.
TEST_F(ServerIntegrationTest, InvalidStepsDoNotCreateNewLabelValues) {
  auto server = StartServer({}, {});
  ASSERT_TRUE(server);
  auto stub = v1::TcmService::NewStub(server->NewChannel());
  const std::vector<unsigned> bad_steps = {3, 4, 17, 1000, 4294967295u};
  for (unsigned steps : bad_steps) {
    GenerateResult r = CallGenerate(*stub, MakeRequest("cond", 1, steps, 1, 1), 60);
    EXPECT_EQ(r.status.error_code(), StatusCode::INVALID_ARGUMENT) << steps << ": " << Describe(r.status);
  }
  // steps 0 asks for the model's default (1): a rejected call counts there.
  GenerateResult by_default = CallGenerate(*stub, MakeRequest("cond", 99, 0, 1, 1), 60);
  EXPECT_EQ(by_default.status.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(by_default.status);
  const std::string metrics = Metrics(*server);
  EXPECT_EQ(MetricSum(metrics, "tcm_requests_total", {{"model", "cond"}, {"steps", "1"}, {"code", "INVALID_ARGUMENT"}}),
            1);
  std::set<std::string> steps_values;
  for (const auto& sample : testing::ParseMetrics(metrics))
    if (sample.name == "tcm_requests_total") steps_values.insert(sample.labels.at("steps"));
  EXPECT_EQ(MetricSum(metrics, "tcm_requests_total", {{"code", "INVALID_ARGUMENT"}}), bad_steps.size() + 1);
  std::string values;
  for (const auto& v : steps_values) values += " " + v;
  // "1" and "2" exist from start-up (at 0); every invalid value shares "invalid".
  EXPECT_EQ(steps_values, (std::set<std::string>{"1", "2", "invalid"}))
      << bad_steps.size() << " invalid steps values made the label values:" << values;
  StopCleanly(*server);
}

// ---------------------------------------------------------------------------
// 4. A full queue answers RESOURCE_EXHAUSTED at once.

TEST_F(ServerIntegrationTest, FullQueueAnswersResourceExhaustedAtOnce) {
  // One image per forward pass and room for 4 queued new images; the gate
  // holds the first batch, so 3 of a 4-image request stay queued.
  testing::BatchGate gate(dir_.path());
  TestRepositoryOptions repo;
  repo.cond.max_batch_size = 1;
  repo.cond.max_queue_size = 4;
  auto server = StartServer(repo, {}, /*wait_until_serving=*/true, &gate);
  ASSERT_TRUE(server);
  auto stub = v1::TcmService::NewStub(server->NewChannel());
  gate.Close();

  const v1::GenerateRequest first = MakeRequest("cond", 1, 2, 4, 11);
  auto first_call = std::async(std::launch::async, [&] { return CallGenerate(*stub, first); });
  auto accepted = WaitForMetrics(
      server->metrics_port(),
      [](const std::string& m) {
        return MetricOrZero(m, "tcm_requests_in_flight", {{"model", "cond"}}) == 1;
      },
      60);
  ASSERT_TRUE(accepted.ok()) << accepted.status();

  const v1::GenerateRequest second = MakeRequest("cond", 2, 1, 4, 12);
  GenerateResult rejected = CallGenerate(*stub, second, 60);
  const bool first_still_running = !IsReady(first_call);
  EXPECT_EQ(rejected.status.error_code(), StatusCode::RESOURCE_EXHAUSTED) << Describe(rejected.status);
  EXPECT_NE(rejected.status.error_message().find("full"), std::string::npos) << rejected.status.error_message();
  EXPECT_EQ(rejected.response.images_size(), 0);

  gate.Open();
  GenerateResult done = first_call.get();
  ASSERT_TRUE(done.status.ok()) << Describe(done.status);
  ExpectCompleteAnswer(first, done.response, "first request");
  EXPECT_TRUE(first_still_running) << "the rejection must come before the queued work finishes";
  EXPECT_LT(rejected.finished, done.finished);
  std::printf("[ queue full ] rejected after %.1f ms; the first request took %.1f ms\n", rejected.seconds * 1e3,
              done.seconds * 1e3);

  // Transient: once the queue drained the same call goes through.
  GenerateResult retried = CallGenerate(*stub, second);
  ASSERT_TRUE(retried.status.ok()) << Describe(retried.status);
  ExpectCompleteAnswer(second, retried.response, "retry");

  // A request larger than the whole queue could never be queued: a bad request.
  GenerateResult too_big = CallGenerate(*stub, MakeRequest("cond", 2, 1, 5, 13), 60);
  EXPECT_EQ(too_big.status.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(too_big.status);
  EXPECT_EQ(too_big.status.error_message(), "num_images: must be at most 4 for model 'cond' (0 = 1), got 5");

  const std::string metrics = Metrics(*server);
  EXPECT_EQ(
      MetricOrZero(metrics, "tcm_requests_total", {{"code", "RESOURCE_EXHAUSTED"}, {"model", "cond"}, {"steps", "1"}}),
      1);
  EXPECT_EQ(MetricOrZero(metrics, "tcm_requests_total", {{"code", "OK"}, {"model", "cond"}, {"steps", "1"}}), 1);
  EXPECT_EQ(MetricOrZero(metrics, "tcm_images_generated_total", {{"model", "cond"}, {"steps", "1"}}), 4);
  EXPECT_EQ(MetricOrZero(metrics, "tcm_batch_size_sum", {{"model", "cond"}}), 4 * 2 + 4)
      << "the rejected call must cost no compute";
  StopCleanly(*server);
}

// ---------------------------------------------------------------------------
// 5. Queued work of cancelled calls and of calls past their deadline is
//    dropped without compute.

TEST_F(ServerIntegrationTest, DeadlineAndCancellationDropQueuedImages) {
  // The gate holds every batch until the test opens it: what is queued stays
  // queued however fast the machine runs the network.
  testing::BatchGate gate(dir_.path());
  TestRepositoryOptions repo;
  repo.cond.max_batch_size = 1;
  auto server = StartServer(repo, {}, /*wait_until_serving=*/true, &gate);
  ASSERT_TRUE(server);
  auto stub = v1::TcmService::NewStub(server->NewChannel());
  auto in_flight_is = [](double n) {
    return [n](const std::string& m) { return MetricOrZero(m, "tcm_requests_in_flight", {{"model", "cond"}}) == n; };
  };
  gate.Close();

  // A backlog: 8 images x 2 steps at one image per forward pass.
  const unsigned backlog_images = 8;
  const v1::GenerateRequest backlog = MakeRequest("cond", 0, 2, backlog_images, 21);
  auto backlog_call = std::async(std::launch::async, [&] { return CallGenerate(*stub, backlog); });
  auto ready = WaitForMetrics(server->metrics_port(), in_flight_is(1), 60);
  ASSERT_TRUE(ready.ok()) << ready.status();

  // 3 images with a 2 s deadline: they expire in the queue.
  const unsigned deadline_images = 3;
  GenerateResult late = CallGenerate(*stub, MakeRequest("cond", 4, 1, deadline_images, 22), 2);
  EXPECT_EQ(late.status.error_code(), StatusCode::DEADLINE_EXCEEDED) << Describe(late.status);

  // 2 images cancelled by the client once they are queued (the expired call
  // is still in flight: its images leave the queue when the next batch forms).
  const unsigned cancelled_images = 2;
  grpc::ClientContext cancel_context;  // outlives the call and the TryCancel
  auto cancelled_call = std::async(std::launch::async, [&] {
    return CallGenerate(*stub, MakeRequest("cond", 5, 1, cancelled_images, 23), 300, &cancel_context);
  });
  auto queued = WaitForMetrics(server->metrics_port(), in_flight_is(3), 60);
  ASSERT_TRUE(queued.ok()) << queued.status();
  cancel_context.TryCancel();
  GenerateResult cancelled = cancelled_call.get();
  EXPECT_EQ(cancelled.status.error_code(), StatusCode::CANCELLED) << Describe(cancelled.status);
  EXPECT_FALSE(IsReady(backlog_call)) << "the gate did not hold the backlog";
  // The server has seen both calls end (the deadline and the cancel) before any
  // batch forms again.
  auto seen = WaitForMetrics(
      server->metrics_port(),
      [](const std::string& m) {
        return MetricOrZero(m, "tcm_client_cancellations_total", {{"model", "cond"}}) == 2;
      },
      60);
  ASSERT_TRUE(seen.ok()) << seen.status();

  gate.Open();
  GenerateResult done = backlog_call.get();
  ASSERT_TRUE(done.status.ok()) << Describe(done.status);
  ExpectCompleteAnswer(backlog, done.response, "backlog");

  // (The queue depth gauge is updated after the batch that finished the last
  // call, so it may lag the response by a moment.)
  auto settled = WaitForMetrics(
      server->metrics_port(),
      [](const std::string& m) {
        return MetricOrZero(m, "tcm_requests_in_flight", {{"model", "cond"}}) == 0 &&
               MetricValue(m, "tcm_queue_depth", {{"model", "cond"}, {"priority", "2"}}) == 0.0;
      },
      10);
  ASSERT_TRUE(settled.ok()) << settled.status();
  const std::string& metrics = *settled;
  EXPECT_EQ(MetricOrZero(metrics, "tcm_images_dropped_total", {{"model", "cond"}, {"reason", "deadline"}}),
            deadline_images);
  EXPECT_EQ(MetricOrZero(metrics, "tcm_images_dropped_total", {{"model", "cond"}, {"reason", "cancelled"}}),
            cancelled_images);
  EXPECT_EQ(MetricOrZero(metrics, "tcm_images_dropped_total", {{"model", "cond"}, {"reason", "failed"}}), 0);
  EXPECT_EQ(MetricOrZero(metrics, "tcm_images_accepted_total", {{"model", "cond"}}),
            backlog_images + deadline_images + cancelled_images);
  EXPECT_EQ(
      MetricOrZero(metrics, "tcm_requests_total", {{"code", "DEADLINE_EXCEEDED"}, {"model", "cond"}, {"steps", "1"}}),
      1);
  EXPECT_EQ(MetricOrZero(metrics, "tcm_requests_total", {{"code", "CANCELLED"}, {"model", "cond"}, {"steps", "1"}}), 1);
  EXPECT_EQ(MetricOrZero(metrics, "tcm_requests_total", {{"code", "OK"}, {"model", "cond"}, {"steps", "2"}}), 1);
  // Only the backlog was computed: its images, its forward passes.
  EXPECT_EQ(MetricOrZero(metrics, "tcm_images_generated_total", {{"model", "cond"}, {"steps", "2"}}), backlog_images);
  EXPECT_EQ(MetricOrZero(metrics, "tcm_images_generated_total", {{"model", "cond"}, {"steps", "1"}}), 0);
  EXPECT_EQ(MetricOrZero(metrics, "tcm_batch_size_sum", {{"model", "cond"}}), 2 * backlog_images);
  EXPECT_EQ(MetricSum(metrics, "tcm_queue_wait_seconds_count", {{"model", "cond"}}), backlog_images);
  EXPECT_EQ(MetricValue(metrics, "tcm_queue_depth", {{"model", "cond"}, {"priority", "2"}}), 0.0);
  StopCleanly(*server);
}

// Priority levels (the server's defaults: 2 levels, requests at the lowest
// unless they ask): with the worker held, a flood of calls at the default
// level is queued; a call at priority 1 that comes after them is served by
// the next batch, ahead of every queued flood call.
TEST_F(ServerIntegrationTest, AHighPriorityCallOvertakesAFloodOfLowPriorityWork) {
  testing::BatchGate gate(dir_.path());
  TestRepositoryOptions repo;
  repo.cond.max_batch_size = 2;
  auto server = StartServer(repo, {}, /*wait_until_serving=*/true, &gate);
  ASSERT_TRUE(server);
  auto stub = v1::TcmService::NewStub(server->NewChannel());
  gate.Close();

  const int flood_calls = 16;
  std::vector<v1::GenerateRequest> flood_requests;
  std::vector<std::future<GenerateResult>> flood;
  for (int i = 0; i < flood_calls; ++i) flood_requests.push_back(MakeRequest("cond", i % 10, 1, 2, 300 + i));
  for (int i = 0; i < flood_calls; ++i)
    flood.push_back(std::async(std::launch::async, [&, i] { return CallGenerate(*stub, flood_requests[i]); }));
  auto queued = WaitForMetrics(
      server->metrics_port(),
      [&](const std::string& m) {
        return MetricOrZero(m, "tcm_requests_in_flight", {{"model", "cond"}}) == flood_calls;
      },
      60);
  ASSERT_TRUE(queued.ok()) << queued.status();

  v1::GenerateRequest urgent = MakeRequest("cond", 7, 1, 2, 400);
  urgent.set_priority(1);
  auto urgent_call = std::async(std::launch::async, [&] { return CallGenerate(*stub, urgent); });
  auto urgent_queued = WaitForMetrics(
      server->metrics_port(),
      [](const std::string& m) {
        return MetricValue(m, "tcm_queue_depth", {{"model", "cond"}, {"priority", "1"}}) == 2.0;
      },
      60);
  ASSERT_TRUE(urgent_queued.ok()) << urgent_queued.status();
  gate.Open();

  GenerateResult done = urgent_call.get();
  ASSERT_TRUE(done.status.ok()) << Describe(done.status);
  ExpectCompleteAnswer(urgent, done.response, "priority 1 call");
  // The server's own queue waits tell the order: a flood call served after the
  // urgent one arrived earlier and started later, so it waited longer. Only
  // the flood call whose batch the gate held may have waited less; first come,
  // first served, all 16 would.
  const double urgent_wait = done.response.timings().queue_seconds();
  int served_first = 0;
  for (int i = 0; i < flood_calls; ++i) {
    GenerateResult result = flood[i].get();
    ASSERT_TRUE(result.status.ok()) << Describe(result.status);
    ExpectCompleteAnswer(flood_requests[i], result.response, "flood call");
    if (result.response.timings().queue_seconds() < urgent_wait) ++served_first;
  }
  EXPECT_LE(served_first, 1);

  // Out of range names the field and the levels.
  v1::GenerateRequest bad = MakeRequest("cond", 1, 1, 1, 1);
  bad.set_priority(3);
  GenerateResult refused = CallGenerate(*stub, bad, 60);
  EXPECT_EQ(refused.status.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(refused.status);
  EXPECT_EQ(refused.status.error_message(),
            "priority: must be 1 (highest) to 2 for model 'cond', or 0 (the model's default, 2), got 3");

  const std::string metrics = Metrics(*server);
  EXPECT_EQ(MetricValue(metrics, "tcm_queue_wait_seconds_count", {{"model", "cond"}, {"priority", "1"}}), 2.0);
  EXPECT_EQ(MetricValue(metrics, "tcm_queue_wait_seconds_count", {{"model", "cond"}, {"priority", "2"}}),
            2.0 * flood_calls);
  StopCleanly(*server);
}

// ---------------------------------------------------------------------------
// 6. SIGTERM: accepted work completes, new work is refused, exit status 0.

TEST_F(ServerIntegrationTest, SigtermFinishesAcceptedWorkThenExitsZero) {
  TestRepositoryOptions repo;
  repo.cond.max_batch_size = 1;
  repo.uncond.max_batch_size = 1;
  const double drain_timeout = 60;
  testing::BatchGate gate(dir_.path());  // holds the work until the server has taken SIGTERM
  auto server = StartServer(repo, {"--drain_timeout", "60"}, /*wait_until_serving=*/true, &gate);
  ASSERT_TRUE(server);
  auto stub = v1::TcmService::NewStub(server->NewChannel());
  gate.Close();

  const std::vector<v1::GenerateRequest> requests = {
      MakeRequest("cond", 1, 2, 8, 31), MakeRequest("cond", std::nullopt, 1, 4, 32),
      MakeRequest("uncond", std::nullopt, 2, 6, 33), MakeRequest("cond", 9, 2, 4, 34, v1::IMAGE_FORMAT_PNG)};
  std::vector<std::future<GenerateResult>> calls;
  for (const auto& r : requests)
    calls.push_back(std::async(std::launch::async, [&stub, &r] { return CallGenerate(*stub, r); }));
  auto accepted = WaitForMetrics(
      server->metrics_port(),
      [&](const std::string& m) { return MetricSum(m, "tcm_requests_in_flight") == requests.size(); }, 60);
  ASSERT_TRUE(accepted.ok()) << accepted.status();

  const auto signalled = std::chrono::steady_clock::now();
  server->Signal(SIGTERM);
  int unfinished = 0;
  for (const auto& c : calls) unfinished += IsReady(c) ? 0 : 1;
  EXPECT_EQ(unfinished, static_cast<int>(calls.size())) << "the gate did not hold the work";

  // Once the server has taken the signal, a new call is refused.
  for (int i = 0; i < 500 && server->Log().find("draining") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_NE(server->Log().find("draining"), std::string::npos);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  {
    auto fresh = v1::TcmService::NewStub(server->NewChannel());
    GenerateResult refused = CallGenerate(*fresh, MakeRequest("cond", 0, 1, 1, 35), 10);
    EXPECT_EQ(refused.status.error_code(), StatusCode::UNAVAILABLE) << Describe(refused.status);
    std::printf("[ drain ] call after SIGTERM: %s\n", Describe(refused.status).c_str());
  }
  gate.Open();

  for (size_t i = 0; i < calls.size(); ++i) {
    GenerateResult r = calls[i].get();
    ASSERT_TRUE(r.status.ok()) << "accepted request " << i << ": " << Describe(r.status);
    ExpectCompleteAnswer(requests[i], r.response, absl::StrCat("accepted request ", i));
  }
  auto status = server->WaitExit(drain_timeout + 30);
  ASSERT_TRUE(status.ok()) << status.status();
  const double exit_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - signalled).count();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "wait status " << *status;
  EXPECT_LT(exit_seconds, drain_timeout);
  EXPECT_NE(server->Log().find("drained"), std::string::npos);
  std::printf("[ drain ] exited %.2f s after SIGTERM (%d of %zu calls were unfinished at the signal)\n", exit_seconds,
              unfinished, calls.size());
}

// ---------------------------------------------------------------------------
// 7. Health: not SERVING until warmed up; NOT_SERVING while draining.

TEST_F(ServerIntegrationTest, HealthIsNotServingUntilWarmedUp) {
  // A big warm-up batch keeps the server NOT_SERVING for a while after its
  // port opens.
  auto server = StartServer({}, {"--warmup_batch_size", "64"}, /*wait_until_serving=*/false);
  ASSERT_TRUE(server);
  int failures = 0, not_serving = 0, cond_not_serving = 0;
  bool serving = false, first_was_serving = false;
  std::string other;
  std::map<std::string, int> failure_kinds;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(240);
  for (int polls = 0; std::chrono::steady_clock::now() < deadline; ++polls) {
    ASSERT_TRUE(server->Running()) << server->Log();
    // A fresh channel per poll, like a readiness probe.
    auto channel = server->NewChannel();
    const auto answer = CheckHealth(channel, "", 3);
    if (!answer.status.ok()) {
      // Nobody listening yet (or, on a starved machine, no answer in time).
      EXPECT_TRUE(answer.status.error_code() == StatusCode::UNAVAILABLE ||
                  answer.status.error_code() == StatusCode::DEADLINE_EXCEEDED)
          << Describe(answer.status);
      ++failures;
      ++failure_kinds[CodeName(answer.status.error_code())];
    } else if (answer.serving == HealthCheckResponse::SERVING) {
      first_was_serving = polls == 0;
      serving = true;
      break;
    } else if (answer.serving == HealthCheckResponse::NOT_SERVING) {
      ++not_serving;
      const auto model = CheckHealth(channel, "cond", 3);
      if (model.status.ok() && model.serving == HealthCheckResponse::NOT_SERVING) ++cond_not_serving;
    } else {
      other = HealthCheckResponse::ServingStatus_Name(answer.serving);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::string kinds;
  for (const auto& [k, n] : failure_kinds) kinds += absl::StrCat(" ", k, " x", n);
  std::printf("[ health ] before SERVING: %d failed checks (%s ), %d NOT_SERVING answers (%d for 'cond')\n", failures,
              kinds.c_str(), not_serving, cond_not_serving);
  ASSERT_TRUE(serving) << "never SERVING";
  EXPECT_FALSE(first_was_serving);
  EXPECT_GT(not_serving, 0) << "the warm-up was never observed as NOT_SERVING";
  EXPECT_GT(cond_not_serving, 0) << "per-model health was never NOT_SERVING during warm-up";
  EXPECT_TRUE(other.empty()) << other;

  auto channel = server->NewChannel();
  for (const std::string model : {"cond", "uncond"}) {
    const auto answer = CheckHealth(channel, model, 10);
    ASSERT_TRUE(answer.status.ok()) << model << ": " << Describe(answer.status);
    EXPECT_EQ(answer.serving, HealthCheckResponse::SERVING) << model;
  }
  const auto unknown = CheckHealth(channel, "nope", 10);
  EXPECT_EQ(unknown.status.error_code(), StatusCode::NOT_FOUND) << Describe(unknown.status);

  // Warm-up is not traffic.
  const std::string metrics = Metrics(*server);
  EXPECT_EQ(MetricSum(metrics, "tcm_batch_size_count"), 0);
  EXPECT_EQ(MetricSum(metrics, "tcm_images_generated_total"), 0);
  StopCleanly(*server);
}

// A grpc.health.v1.Health/Watch stream read on its own thread: every status
// the server sends, with the time it arrived.
class HealthWatcher {
 public:
  struct Update {
    HealthCheckResponse::ServingStatus status;
    std::chrono::steady_clock::time_point at;
  };

  HealthWatcher(const std::shared_ptr<grpc::Channel>& channel, const std::string& service)
      : stub_(grpc::health::v1::Health::NewStub(channel)) {
    context_.set_deadline(testing::DeadlineIn(600));
    thread_ = std::thread([this, service] {
      grpc::health::v1::HealthCheckRequest request;
      request.set_service(service);
      auto reader = stub_->Watch(&context_, request);
      HealthCheckResponse response;
      while (reader->Read(&response)) {
        std::lock_guard<std::mutex> lock(mu_);
        updates_.push_back({response.status(), std::chrono::steady_clock::now()});
      }
      const grpc::Status status = reader->Finish();
      std::lock_guard<std::mutex> lock(mu_);
      ended_ = true;
      status_ = status;
    });
  }
  ~HealthWatcher() {
    // TryCancel has no effect before the call starts: repeat until it ended.
    for (int i = 0; i < 100 && !ended(); ++i) {
      Cancel();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    thread_.join();
  }

  void Cancel() { context_.TryCancel(); }

  // When `status` first arrived, waiting up to `seconds` for it.
  std::optional<std::chrono::steady_clock::time_point> WaitFor(HealthCheckResponse::ServingStatus status,
                                                               double seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    do {
      {
        std::lock_guard<std::mutex> lock(mu_);
        for (const auto& u : updates_)
          if (u.status == status) return u.at;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    } while (std::chrono::steady_clock::now() < deadline);
    return std::nullopt;
  }

  std::vector<Update> updates() {
    std::lock_guard<std::mutex> lock(mu_);
    return updates_;
  }
  bool ended() {
    std::lock_guard<std::mutex> lock(mu_);
    return ended_;
  }

 private:
  std::unique_ptr<grpc::health::v1::Health::Stub> stub_;
  grpc::ClientContext context_;
  std::mutex mu_;
  std::vector<Update> updates_;
  bool ended_ = false;
  grpc::Status status_;
  std::thread thread_;  // last: started after the members above
};

TEST_F(ServerIntegrationTest, HealthTurnsNotServingWhileDraining) {
  TestRepositoryOptions repo;
  repo.cond.max_batch_size = 1;
  const double drain_timeout = 60;
  testing::BatchGate gate(dir_.path());  // holds the work until NOT_SERVING has been seen
  auto server = StartServer(repo, {"--drain_timeout", "60"}, /*wait_until_serving=*/true, &gate);
  ASSERT_TRUE(server);
  auto channel = server->NewChannel();
  auto stub = v1::TcmService::NewStub(channel);
  HealthWatcher overall(channel, ""), cond(channel, "cond");
  ASSERT_TRUE(overall.WaitFor(HealthCheckResponse::SERVING, 60)) << "Watch never reported SERVING";
  ASSERT_TRUE(cond.WaitFor(HealthCheckResponse::SERVING, 60)) << "Watch of 'cond' never reported SERVING";

  // Something to drain: 8 two-step images at one per forward pass.
  gate.Close();
  const v1::GenerateRequest work = MakeRequest("cond", 2, 2, 8, 41);
  auto work_call = std::async(std::launch::async, [&] { return CallGenerate(*stub, work); });
  auto accepted = WaitForMetrics(
      server->metrics_port(),
      [](const std::string& m) {
        return MetricOrZero(m, "tcm_requests_in_flight", {{"model", "cond"}}) == 1;
      },
      60);
  ASSERT_TRUE(accepted.ok()) << accepted.status();

  server->Signal(SIGTERM);
  const auto not_serving_at = overall.WaitFor(HealthCheckResponse::NOT_SERVING, 60);
  ASSERT_TRUE(not_serving_at) << "Watch never reported NOT_SERVING after SIGTERM";
  const bool draining = !IsReady(work_call);
  EXPECT_TRUE(cond.WaitFor(HealthCheckResponse::NOT_SERVING, 60)) << "'cond' still SERVING after SIGTERM";
  // A fresh Check while draining: NOT_SERVING, or refused (the listener is closing).
  const auto check = CheckHealth(server->NewChannel(), "", 5);
  if (check.status.ok()) {
    EXPECT_EQ(check.serving, HealthCheckResponse::NOT_SERVING);
  } else {
    EXPECT_EQ(check.status.error_code(), StatusCode::UNAVAILABLE) << Describe(check.status);
  }
  std::printf("[ health ] a fresh Check during the drain: %s\n",
              check.status.ok() ? HealthCheckResponse::ServingStatus_Name(check.serving).c_str()
                                : Describe(check.status).c_str());
  // Open Watch streams would hold up the exit (see OpenHealthWatchDoesNotDelayExit).
  overall.Cancel();
  cond.Cancel();

  gate.Open();
  GenerateResult done = work_call.get();
  ASSERT_TRUE(done.status.ok()) << Describe(done.status);
  ExpectCompleteAnswer(work, done.response, "drained request");
  EXPECT_TRUE(draining) << "the queued request finished before health turned NOT_SERVING";
  EXPECT_LT(*not_serving_at, done.finished) << "NOT_SERVING must be visible while work is still draining";

  auto status = server->WaitExit(drain_timeout + 30);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "wait status " << *status;
  const auto updates = overall.updates();
  for (size_t i = 1; i < updates.size(); ++i)
    if (updates[i - 1].status == HealthCheckResponse::NOT_SERVING)
      EXPECT_NE(updates[i].status, HealthCheckResponse::SERVING) << "SERVING again after NOT_SERVING";
}

// A client watching health (e.g. gRPC client-side health checking, which keeps
// a Watch stream open per connection) must not keep an idle server from
// exiting for the whole drain timeout after SIGTERM.
TEST_F(ServerIntegrationTest, OpenHealthWatchDoesNotDelayExit) {
  const double drain_timeout = 60, allowed = 15;
  auto server = StartServer({}, {"--drain_timeout", "60"});
  ASSERT_TRUE(server);
  auto channel = server->NewChannel();
  HealthWatcher watcher(channel, "");
  ASSERT_TRUE(watcher.WaitFor(HealthCheckResponse::SERVING, 60));
  GenerateResult r = CallGenerate(*v1::TcmService::NewStub(channel), MakeRequest("cond", 1, 1, 1, 3));
  ASSERT_TRUE(r.status.ok()) << Describe(r.status);

  const auto signalled = std::chrono::steady_clock::now();
  server->Signal(SIGTERM);
  EXPECT_TRUE(watcher.WaitFor(HealthCheckResponse::NOT_SERVING, 30)) << "no NOT_SERVING after SIGTERM";
  auto status = server->WaitExit(allowed);
  if (!status.ok()) {
    ADD_FAILURE() << "an idle tcm-server was still running " << allowed
                  << " s after SIGTERM while a client held a health Watch stream open (drain timeout " << drain_timeout
                  << " s)";
    const auto cancelled = std::chrono::steady_clock::now();
    watcher.Cancel();
    status = server->WaitExit(drain_timeout + 30);
    std::printf("[ health ] exited %.2f s after the client cancelled its Watch (%.2f s after SIGTERM)\n",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - cancelled).count(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - signalled).count());
  }
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "wait status " << *status;
}

// ---------------------------------------------------------------------------
// 8. Metrics follow traffic.

TEST_F(ServerIntegrationTest, MetricsCountRequestsImagesAndBatches) {
  auto server = StartServer({}, {"--precision", "fp32"});
  ASSERT_TRUE(server);
  auto stub = v1::TcmService::NewStub(server->NewChannel());

  std::string metrics = Metrics(*server);
  // Both models are described, and nothing has been counted yet.
  const Labels cond_info = {{"model", "cond"},    {"architecture", "SongUNet"}, {"resolution", "32"},
                            {"channels", "3"},    {"num_classes", "10"},        {"default_steps", "1"},
                            {"precision", "fp32"}};
  const Labels uncond_info = {{"model", "uncond"},  {"architecture", "SongUNet"}, {"resolution", "32"},
                              {"channels", "3"},    {"num_classes", "0"},         {"default_steps", "1"},
                              {"precision", "fp32"}};
  EXPECT_EQ(MetricValue(metrics, "tcm_model_info", cond_info), 1.0) << metrics;
  EXPECT_EQ(MetricValue(metrics, "tcm_model_info", uncond_info), 1.0);
  EXPECT_EQ(MetricSum(metrics, "tcm_requests_total"), 0);
  EXPECT_EQ(MetricValue(metrics, "tcm_batch_size_count", {{"model", "cond"}}), 0.0);

  const int n = 3;
  const unsigned k = 2;
  for (int i = 0; i < n; ++i) {
    const v1::GenerateRequest request = MakeRequest("cond", i, 2, k, 500 + i);
    GenerateResult r = CallGenerate(*stub, request);
    ASSERT_TRUE(r.status.ok()) << Describe(r.status);
    ExpectCompleteAnswer(request, r.response, absl::StrCat("request ", i));
    EXPECT_GT(r.response.timings().total_seconds(), 0);
    EXPECT_GT(r.response.timings().compute_seconds(), 0);
    EXPECT_LE(r.response.timings().compute_seconds(), r.response.timings().total_seconds());
  }
  // The queue depth gauge is updated by the worker after the batch that
  // finished the last call, so it may lag the response by a moment.
  auto settled = WaitForMetrics(
      server->metrics_port(),
      [](const std::string& m) {
        return MetricValue(m, "tcm_queue_depth", {{"model", "cond"}, {"priority", "2"}}) == 0.0;
      },
      10);
  EXPECT_TRUE(settled.ok()) << "tcm_queue_depth{model=\"cond\",priority=\"2\"} did not return to 0: "
                            << settled.status();
  metrics = Metrics(*server);
  const Labels ok2 = {{"code", "OK"}, {"model", "cond"}, {"steps", "2"}};
  const Labels cond2 = {{"model", "cond"}, {"steps", "2"}};
  const Labels cond = {{"model", "cond"}};
  EXPECT_EQ(MetricValue(metrics, "tcm_requests_total", ok2), n);
  EXPECT_EQ(MetricSum(metrics, "tcm_requests_total"), n);
  EXPECT_EQ(MetricValue(metrics, "tcm_images_generated_total", cond2), n * k);
  EXPECT_EQ(MetricValue(metrics, "tcm_request_duration_seconds_count", cond2), n);
  EXPECT_GT(MetricOrZero(metrics, "tcm_request_duration_seconds_sum", cond2), 0);
  EXPECT_GT(MetricOrZero(metrics, "tcm_batch_size_count", cond), 0);
  EXPECT_EQ(MetricOrZero(metrics, "tcm_batch_size_sum", cond), n * k * 2) << "one row per image and step";
  EXPECT_EQ(MetricOrZero(metrics, "tcm_batch_compute_seconds_count", cond),
            MetricOrZero(metrics, "tcm_batch_size_count", cond));
  EXPECT_EQ(MetricSum(metrics, "tcm_queue_wait_seconds_count", cond), n * k) << "one wait per image";
  EXPECT_EQ(MetricValue(metrics, "tcm_queue_wait_seconds_count", {{"model", "cond"}, {"priority", "2"}}), n * k);
  EXPECT_EQ(MetricValue(metrics, "tcm_queue_depth", {{"model", "cond"}, {"priority", "1"}}), 0.0);
  EXPECT_EQ(MetricValue(metrics, "tcm_queue_depth", {{"model", "cond"}, {"priority", "2"}}), 0.0);
  EXPECT_EQ(MetricValue(metrics, "tcm_requests_in_flight", cond), 0.0);
  EXPECT_GT(MetricOrZero(metrics, "tcm_worker_busy_seconds_total", {{"worker", "0"}}), 0);
  EXPECT_EQ(MetricOrZero(metrics, "tcm_batch_size_count", {{"model", "uncond"}}), 0);
  EXPECT_EQ(MetricSum(metrics, "tcm_images_dropped_total"), 0);
  // The latency histogram is cumulative and complete.
  EXPECT_EQ(
      MetricOrZero(metrics, "tcm_request_duration_seconds_bucket", {{"model", "cond"}, {"steps", "2"}, {"le", "+Inf"}}),
      n);
  StopCleanly(*server);
}

// ---------------------------------------------------------------------------
// 9. GenerateStream and ListModels.

TEST_F(ServerIntegrationTest, GenerateStreamSendsEveryImageOnceWithGenerateBytes) {
  auto server = StartServer({}, {});
  ASSERT_TRUE(server);
  auto stub = v1::TcmService::NewStub(server->NewChannel());

  for (const auto& request : {MakeRequest("cond", 3, 2, 4, 42), MakeRequest("uncond", std::nullopt, 1, 5, 8),
                              MakeRequest("cond", std::nullopt, 2, 3, 77, v1::IMAGE_FORMAT_PNG)}) {
    SCOPED_TRACE(request.ShortDebugString());
    GenerateResult unary = CallGenerate(*stub, request);
    ASSERT_TRUE(unary.status.ok()) << Describe(unary.status);
    ExpectCompleteAnswer(request, unary.response, "Generate");

    grpc::ClientContext context;
    context.set_deadline(testing::DeadlineIn(300));
    auto reader = stub->GenerateStream(&context, request);
    std::vector<v1::GenerateStreamResponse> messages;
    for (v1::GenerateStreamResponse m; reader->Read(&m);) messages.push_back(m);
    const grpc::Status status = reader->Finish();
    ASSERT_TRUE(status.ok()) << Describe(status);

    ASSERT_EQ(messages.size(), request.num_images());
    std::set<uint32_t> seen;
    for (const auto& m : messages) {
      EXPECT_EQ(m.model(), request.model());
      EXPECT_EQ(m.steps(), request.steps());
      const uint32_t index = m.image().index();
      ASSERT_LT(index, request.num_images());
      EXPECT_TRUE(seen.insert(index).second) << "index " << index << " sent twice";
      const v1::Image& expected = unary.response.images(static_cast<int>(index));
      EXPECT_EQ(m.image().data(), expected.data()) << "image " << index << " differs from Generate's";
      EXPECT_EQ(m.image().class_label(), expected.class_label());
      EXPECT_EQ(m.image().seed(), request.seed());
      EXPECT_EQ(m.image().width(), static_cast<uint32_t>(kSide));
      EXPECT_EQ(m.image().format(), request.format());
    }
    EXPECT_EQ(seen.size(), request.num_images());
  }
  StopCleanly(*server);
}

// Progressive delivery: with preview, each image's first-step result comes
// ahead of its final image, byte-identical to the same request at 1 step; the
// final is byte-identical to Generate at 2 steps; no extra forward pass.
TEST_F(ServerIntegrationTest, PreviewsAreTheOneStepImagesAheadOfTheFinalOnesAtNoExtraCompute) {
  auto server = StartServer({}, {});
  ASSERT_TRUE(server);
  auto stub = v1::TcmService::NewStub(server->NewChannel());
  const unsigned n = 3;
  const v1::GenerateRequest one_step = MakeRequest("cond", 5, 1, n, 91, v1::IMAGE_FORMAT_PNG);
  const v1::GenerateRequest two_step = MakeRequest("cond", 5, 2, n, 91, v1::IMAGE_FORMAT_PNG);
  GenerateResult first = CallGenerate(*stub, one_step);
  GenerateResult final = CallGenerate(*stub, two_step);
  ASSERT_TRUE(first.status.ok()) << Describe(first.status);
  ASSERT_TRUE(final.status.ok()) << Describe(final.status);
  const double rows_before = MetricOrZero(Metrics(*server), "tcm_batch_size_sum", {{"model", "cond"}});

  v1::GenerateRequest asked = two_step;
  asked.set_preview(true);
  grpc::ClientContext context;
  context.set_deadline(testing::DeadlineIn(300));
  auto reader = stub->GenerateStream(&context, asked);
  std::vector<v1::GenerateStreamResponse> messages;
  for (v1::GenerateStreamResponse m; reader->Read(&m);) messages.push_back(m);
  const grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << Describe(status);
  ASSERT_EQ(messages.size(), 2 * n);
  std::map<uint32_t, int> previewed_at, finished_at;
  for (size_t i = 0; i < messages.size(); ++i) {
    const v1::GenerateStreamResponse& m = messages[i];
    const uint32_t index = m.image().index();
    ASSERT_LT(index, n);
    const GenerateResult& expected = m.preview() ? first : final;
    EXPECT_EQ(m.image().data(), expected.response.images(static_cast<int>(index)).data())
        << (m.preview() ? "preview " : "final ") << index;
    EXPECT_EQ(m.steps(), 2u);
    auto& at = m.preview() ? previewed_at : finished_at;
    EXPECT_TRUE(at.emplace(index, static_cast<int>(i)).second) << "index " << index << " sent twice";
  }
  ASSERT_EQ(previewed_at.size(), n);
  ASSERT_EQ(finished_at.size(), n);
  for (uint32_t i = 0; i < n; ++i) EXPECT_LT(previewed_at[i], finished_at[i]) << "image " << i;
  EXPECT_EQ(MetricOrZero(Metrics(*server), "tcm_batch_size_sum", {{"model", "cond"}}) - rows_before, 2.0 * n)
      << "one row per image and step, previews included";

  GenerateResult unary = CallGenerate(*stub, asked, 60);
  EXPECT_EQ(unary.status.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(unary.status);
  StopCleanly(*server);
}

// The exact response cache: a seeded call's images come back byte for byte
// without compute, a larger call computes only its new images, and a model
// whose config opts out is never cached.
TEST_F(ServerIntegrationTest, TheResponseCacheServesSeededImagesWithoutCompute) {
  TestRepositoryOptions repo;
  repo.uncond.cache_disabled = true;
  auto server = StartServer(repo, {"--cache_mb", "16"});
  ASSERT_TRUE(server);
  auto stub = v1::TcmService::NewStub(server->NewChannel());
  auto rows = [&](const std::string& model) {
    return MetricOrZero(Metrics(*server), "tcm_batch_size_sum", {{"model", model}});
  };

  const v1::GenerateRequest four = MakeRequest("cond", 6, 2, 4, 1234, v1::IMAGE_FORMAT_PNG);
  GenerateResult first = CallGenerate(*stub, four);
  ASSERT_TRUE(first.status.ok()) << Describe(first.status);
  EXPECT_EQ(rows("cond"), 2 * 4);
  const v1::GenerateRequest eight = MakeRequest("cond", 6, 2, 8, 1234, v1::IMAGE_FORMAT_PNG);
  GenerateResult second = CallGenerate(*stub, eight);
  ASSERT_TRUE(second.status.ok()) << Describe(second.status);
  ExpectCompleteAnswer(eight, second.response, "8 after 4");
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(second.response.images(i).data(), first.response.images(i).data()) << "image " << i;
  EXPECT_EQ(rows("cond"), 2 * 4 + 2 * 4) << "only the 4 new images were computed";
  GenerateResult third = CallGenerate(*stub, eight);
  ASSERT_TRUE(third.status.ok()) << Describe(third.status);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(third.response.images(i).data(), second.response.images(i).data());
  EXPECT_EQ(rows("cond"), 2 * 8) << "all cached: no compute";

  const v1::GenerateRequest opted_out = MakeRequest("uncond", std::nullopt, 1, 2, 99);
  for (int round = 0; round < 2; ++round) ASSERT_TRUE(CallGenerate(*stub, opted_out).status.ok());
  EXPECT_EQ(rows("uncond"), 2 * 2) << "caching { enable: false }: computed both times";

  const std::string metrics = Metrics(*server);
  EXPECT_EQ(MetricValue(metrics, "tcm_cache_hits_total", {{"model", "cond"}}), 4.0 + 8.0);
  EXPECT_EQ(MetricValue(metrics, "tcm_cache_misses_total", {{"model", "cond"}}), 4.0 + 4.0);
  EXPECT_EQ(MetricValue(metrics, "tcm_cache_hits_total", {{"model", "uncond"}}), 0.0);
  EXPECT_EQ(MetricValue(metrics, "tcm_cache_misses_total", {{"model", "uncond"}}), 0.0);
  EXPECT_GT(MetricOrZero(metrics, "tcm_cache_bytes", {}), 8 * 100.0);
  EXPECT_EQ(MetricValue(metrics, "tcm_images_generated_total", {{"model", "cond"}, {"steps", "2"}}), 4.0 + 8 + 8);
  StopCleanly(*server);
}

TEST_F(ServerIntegrationTest, ListModelsDescribesBothModels) {
  auto server = StartServer({}, {});  // the server's default --precision (auto)
  ASSERT_TRUE(server);
  auto stub = v1::TcmService::NewStub(server->NewChannel());
  grpc::ClientContext context;
  context.set_deadline(testing::DeadlineIn(60));
  v1::ListModelsResponse response;
  const grpc::Status status = stub->ListModels(&context, v1::ListModelsRequest(), &response);
  ASSERT_TRUE(status.ok()) << Describe(status);
  ASSERT_EQ(response.models_size(), 2) << response.DebugString();

  std::map<std::string, v1::ModelInfo> models;
  int defaults = 0;
  for (const auto& m : response.models()) {
    models[m.name()] = m;
    defaults += m.is_default() ? 1 : 0;
    EXPECT_EQ(m.architecture(), "SongUNet") << m.name();
    EXPECT_EQ(m.resolution(), 32u) << m.name();
    EXPECT_EQ(m.channels(), 3u) << m.name();
    EXPECT_FLOAT_EQ(m.t_max(), 80.0f) << m.name();
    EXPECT_NEAR(m.mid_t(), 0.821f, 1e-6) << m.name();
    EXPECT_GE(m.default_steps(), 1u);
    EXPECT_LE(m.default_steps(), 2u);
    // --precision auto: bf16 where this CPU has native bf16, else fp32.
    EXPECT_EQ(m.precision(), CpuHasNativeBf16() ? "bf16" : "fp32") << m.name();
  }
  EXPECT_EQ(defaults, 1);
  ASSERT_EQ(models.count("cond"), 1u);
  ASSERT_EQ(models.count("uncond"), 1u);
  EXPECT_EQ(models["cond"].num_classes(), 10u);
  EXPECT_EQ(std::vector<std::string>(models["cond"].class_names().begin(), models["cond"].class_names().end()),
            testing::CondClassNames());
  EXPECT_EQ(models["uncond"].num_classes(), 0u);
  EXPECT_EQ(models["uncond"].class_names_size(), 0);
  EXPECT_TRUE(models["cond"].is_default()) << "the first model by name is the default";

  // An empty model name is served by the default model.
  GenerateResult r = CallGenerate(*stub, MakeRequest("", 1, 1, 1, 5));
  ASSERT_TRUE(r.status.ok()) << Describe(r.status);
  EXPECT_EQ(r.response.model(), "cond");
  StopCleanly(*server);
}

// A request of `mib` MiB (its model name padded) is refused RESOURCE_EXHAUSTED,
// and an ordinary call after it is served.
void ExpectRequestRefusedAsTooLarge(v1::TcmService::Stub& stub, int mib) {
  v1::GenerateRequest huge = MakeRequest("cond", 1, 1, 1, 1);
  huge.set_model(std::string(static_cast<size_t>(mib) << 20, 'x'));
  GenerateResult r = CallGenerate(stub, huge, 60);
  EXPECT_EQ(r.status.error_code(), StatusCode::RESOURCE_EXHAUSTED) << Describe(r.status);
  GenerateResult ok = CallGenerate(stub, MakeRequest("cond", 1, 1, 1, 1), 60);
  EXPECT_TRUE(ok.status.ok()) << Describe(ok.status);
}

TEST_F(ServerIntegrationTest, MessagesAboveTheSizeLimitAreRefused) {
  auto server = StartServer({}, {"--max_message_mb", "1"});
  ASSERT_TRUE(server);
  auto stub = v1::TcmService::NewStub(server->NewChannel());
  ExpectRequestRefusedAsTooLarge(*stub, 2);
  // The refused call cost nothing: one pass, the ordinary call's.
  EXPECT_EQ(MetricSum(Metrics(*server), "tcm_batch_size_sum"), 1);
  StopCleanly(*server);
}

// gRPC takes the connection age in milliseconds as an int: an age it cannot
// hold is refused at start naming the flag and the range (it used to wrap
// negative, and gRPC then closed every connection at once), and the largest
// one it can hold serves calls on one connection.
TEST_F(ServerIntegrationTest, ConnectionAgesBeyondGrpcsRangeAreRefusedAndTheLargestServes) {
  auto refused = StartServer({}, {"--max_connection_age_s", "3000000"}, /*wait_until_serving=*/false);
  ASSERT_TRUE(refused);
  auto exited = refused->WaitExit(120);
  ASSERT_TRUE(exited.ok()) << exited.status();
  EXPECT_TRUE(WIFEXITED(*exited) && WEXITSTATUS(*exited) == 1) << "wait status " << *exited;
  EXPECT_NE(refused->Log().find("--max_connection_age_s: must be in [0, 2147483], got 3000000"), std::string::npos)
      << refused->Log();

  auto server = StartServer({}, {"--max_connection_age_s", "2147483"});
  ASSERT_TRUE(server);
  auto channel = server->NewChannel();
  auto stub = v1::TcmService::NewStub(channel);
  for (int i = 0; i < 3; ++i) {
    auto result = CallGenerate(*stub, MakeRequest("cond", 1, 1, 1, i), 120);
    EXPECT_TRUE(result.status.ok()) << Describe(result.status);
    EXPECT_EQ(result.response.images_size(), 1);
  }
  EXPECT_EQ(channel->GetState(/*try_to_connect=*/false), GRPC_CHANNEL_READY) << "the connection is still open";
  StopCleanly(*server);
}

TEST_F(ServerIntegrationTest, RequestsAreCappedAtFourMiBWhateverTheResponseLimit) {
  auto server = StartServer({}, {});  // --max_message_mb 64: responses up to 64 MiB
  ASSERT_TRUE(server);
  auto stub = v1::TcmService::NewStub(server->NewChannel());
  ExpectRequestRefusedAsTooLarge(*stub, 5);
  StopCleanly(*server);
}

// Server reflection: a ListServices request on the reflection stream, sent as
// raw protobuf bytes (field 7, list_services = ""), names the services.
TEST_F(ServerIntegrationTest, ReflectionListsTheServices) {
  auto server = StartServer({}, {});
  ASSERT_TRUE(server);
  grpc::GenericStub stub(server->NewChannel());
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(testing::DeadlineIn(60));
  auto await = [&cq](intptr_t want) {
    void* tag = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(reinterpret_cast<intptr_t>(tag), want);
    return ok;
  };
  auto call = stub.PrepareCall(&context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(await(1));
  grpc::Slice request_bytes(std::string("\x3a\x00", 2));
  grpc::ByteBuffer request(&request_bytes, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  ASSERT_TRUE(await(2));
  call->WritesDone(reinterpret_cast<void*>(3));
  ASSERT_TRUE(await(3));
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(4));
  ASSERT_TRUE(await(4));
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  await(5);
  EXPECT_TRUE(status.ok()) << Describe(status);
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const auto& slice : slices) bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  for (const char* service : {"tcm.v1.TcmService", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"})
    EXPECT_NE(bytes.find(service), std::string::npos) << service << " not listed";
  StopCleanly(*server);
}

// Queued work that outlasts --drain_timeout is given up: the server still
// exits 0, soon after the deadline, and every call gets an answer.
TEST_F(ServerIntegrationTest, DrainTimeoutCutsLongQueuedWorkAndStillExitsZero) {
  TestRepositoryOptions repo;
  repo.cond.max_batch_size = 1;
  repo.cond.max_queue_size = 512;
  testing::BatchGate gate(dir_.path());  // holds the work past the drain timeout
  const int http_port = testing::FreePort();
  auto server = StartServer(repo, {"--drain_timeout", "0.2", "--http_port", std::to_string(http_port)},
                            /*wait_until_serving=*/true, &gate);
  ASSERT_TRUE(server);
  auto stub = v1::TcmService::NewStub(server->NewChannel());
  gate.Close();
  // 4 x 64 images at 2 steps over gRPC and 2 x 16 over HTTP, one image per pass: 576 forward passes.
  std::vector<std::future<GenerateResult>> calls;
  for (int i = 0; i < 4; ++i)
    calls.push_back(std::async(std::launch::async,
                               [&stub, i] { return CallGenerate(*stub, MakeRequest("cond", 1, 2, 64, 40 + i), 120); }));
  const std::string infer = R"({"parameters": {"steps": 2}, "inputs": [{"name": "class_label", "datatype": "INT64",
      "shape": [16], "data": [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6]}]})";
  std::vector<std::future<absl::StatusOr<testing::HttpReply>>> http_calls;
  for (int i = 0; i < 2; ++i)
    http_calls.push_back(std::async(
        std::launch::async, [&] { return testing::HttpCall(http_port, "POST", "/v2/models/cond/infer", infer, 120); }));
  auto accepted = WaitForMetrics(
      server->metrics_port(),
      [&](const std::string& m) { return MetricSum(m, "tcm_images_accepted_total") == 4 * 64 + 2 * 16; }, 60);
  ASSERT_TRUE(accepted.ok()) << accepted.status();
  // The server ends open health Watch streams when its drain timeout has run
  // out: the gate opens only then.
  HealthWatcher watcher(server->NewChannel(), "");
  ASSERT_TRUE(watcher.WaitFor(HealthCheckResponse::SERVING, 60));
  server->Signal(SIGTERM);
  for (int i = 0; i < 6000 && !watcher.ended(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(watcher.ended()) << "the health Watch stream did not end after the drain timeout";
  gate.Open();
  auto status = server->WaitExit(60);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "wait status " << *status;
  int cut = 0;
  for (auto& c : calls) {
    ASSERT_EQ(c.wait_for(std::chrono::seconds(30)), std::future_status::ready) << "a call was left hanging";
    const GenerateResult r = c.get();
    if (!r.status.ok()) ++cut;
  }
  EXPECT_EQ(cut, 4) << "work held past the drain timeout must be cut";
  // HTTP calls are cut too, with the reason (not computed to the end past the deadline).
  for (auto& c : http_calls) {
    ASSERT_EQ(c.wait_for(std::chrono::seconds(30)), std::future_status::ready) << "an HTTP call was left hanging";
    const absl::StatusOr<testing::HttpReply> reply = c.get();
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(reply->status, 503) << reply->body;
    EXPECT_NE(reply->body.find("--drain_timeout"), std::string::npos) << reply->body;
  }
  EXPECT_NE(server->Log().find("drain timeout passed: queued work dropped"), std::string::npos) << server->Log();
  std::printf("[ drain timeout ] %d of 4 gRPC calls cut, both HTTP calls answered 503\n", cut);
}

// ---------------------------------------------------------------------------
// The Open Inference Protocol on the same port: tcm.v1's pixels, byte for byte.

// ModelInfer of `labels` (empty: an unconditional model, `num_images` images).
inference::ModelInferRequest InferRequest(const std::string& model, const std::vector<int64_t>& labels, int64_t steps,
                                          int64_t seed, int64_t num_images = 0) {
  inference::ModelInferRequest request;
  request.set_model_name(model);
  if (!labels.empty()) {
    auto* input = request.add_inputs();
    input->set_name("class_label");
    input->set_datatype("INT64");
    input->add_shape(static_cast<int64_t>(labels.size()));
    for (int64_t l : labels) input->mutable_contents()->add_int64_contents(l);
  }
  (*request.mutable_parameters())["steps"].set_int64_param(steps);
  (*request.mutable_parameters())["seed"].set_int64_param(seed);
  if (num_images > 0) (*request.mutable_parameters())["num_images"].set_int64_param(num_images);
  return request;
}

// The raw pixels of `response`'s images [from, from + count), concatenated in index order.
std::string RawPixels(const v1::GenerateResponse& response, int from, int count) {
  std::string pixels;
  for (int i = from; i < from + count; ++i) pixels += response.images(i).data();
  return pixels;
}

TEST_F(ServerIntegrationTest, OpenInferenceProtocolGivesTheSamePixelsAsTcmV1) {
  auto server = StartServer({}, {});
  ASSERT_TRUE(server);
  auto channel = server->NewChannel();
  auto tcm = v1::TcmService::NewStub(channel);
  auto oip = inference::GRPCInferenceService::NewStub(channel);
  auto infer = [&](const inference::ModelInferRequest& request) {
    grpc::ClientContext context;
    context.set_deadline(testing::DeadlineIn(300));
    inference::ModelInferResponse response;
    const grpc::Status status = oip->ModelInfer(&context, request, &response);
    EXPECT_TRUE(status.ok()) << Describe(status);
    return response;
  };

  // N equal classes: byte-identical to Generate with num_images N, at 1 and 2 steps.
  for (int steps : {1, 2}) {
    SCOPED_TRACE(absl::StrCat(steps, " step(s)"));
    const GenerateResult v1_result = CallGenerate(*tcm, MakeRequest("cond", 3, steps, 3, 77));
    ASSERT_TRUE(v1_result.status.ok()) << Describe(v1_result.status);
    const inference::ModelInferResponse response = infer(InferRequest("cond", {3, 3, 3}, steps, 77));
    ASSERT_EQ(response.outputs_size(), 1);
    const auto& image = v1_result.response.images(0);
    EXPECT_EQ(std::vector<int64_t>(response.outputs(0).shape().begin(), response.outputs(0).shape().end()),
              (std::vector<int64_t>{3, image.height(), image.width(), image.channels()}));
    EXPECT_EQ(response.outputs(0).datatype(), "UINT8");
    ASSERT_EQ(response.raw_output_contents_size(), 1);
    EXPECT_TRUE(response.raw_output_contents(0) == RawPixels(v1_result.response, 0, 3))
        << "ModelInfer's pixels differ from Generate's";
    EXPECT_EQ(response.parameters().at("seed").int64_param(), 77);
    EXPECT_EQ(response.parameters().at("steps").int64_param(), steps);
  }

  // Different classes per image: image i is the image of index i of its class.
  const GenerateResult class1 = CallGenerate(*tcm, MakeRequest("cond", 1, 2, 2, 5));
  const GenerateResult class4 = CallGenerate(*tcm, MakeRequest("cond", 4, 2, 2, 5));
  ASSERT_TRUE(class1.status.ok() && class4.status.ok());
  const inference::ModelInferResponse mixed = infer(InferRequest("cond", {1, 4}, 2, 5));
  ASSERT_EQ(mixed.raw_output_contents_size(), 1);
  EXPECT_TRUE(mixed.raw_output_contents(0) == RawPixels(class1.response, 0, 1) + RawPixels(class4.response, 1, 1));

  // An unconditional model: num_images as a parameter.
  const GenerateResult uncond = CallGenerate(*tcm, MakeRequest("uncond", std::nullopt, 2, 2, 9));
  ASSERT_TRUE(uncond.status.ok()) << Describe(uncond.status);
  const inference::ModelInferResponse uncond_oip = infer(InferRequest("uncond", {}, 2, 9, 2));
  ASSERT_EQ(uncond_oip.raw_output_contents_size(), 1);
  EXPECT_TRUE(uncond_oip.raw_output_contents(0) == RawPixels(uncond.response, 0, 2));

  // Health and metadata as the server states them.
  grpc::ClientContext ready_context;
  inference::ServerReadyResponse ready;
  ASSERT_TRUE(oip->ServerReady(&ready_context, {}, &ready).ok());
  EXPECT_TRUE(ready.ready());
  grpc::ClientContext metadata_context;
  inference::ModelMetadataRequest metadata_request;
  metadata_request.set_name("cond");
  inference::ModelMetadataResponse metadata;
  ASSERT_TRUE(oip->ModelMetadata(&metadata_context, metadata_request, &metadata).ok());
  EXPECT_EQ(metadata.platform(), "tcm_libtorch");
  ASSERT_EQ(metadata.outputs_size(), 1);
  EXPECT_EQ(metadata.outputs(0).shape(0), -1);

  // Both front ends count into the same metrics: 3 + 3 + 2 + 2 images of cond from ModelInfer.
  const std::string metrics = Metrics(*server);
  EXPECT_EQ(MetricSum(metrics, "tcm_images_generated_total", {{"model", "cond"}}), 2 * (3 + 3) + 2 + 2 + 2);
  StopCleanly(*server);
}

}  // namespace
}  // namespace tcm
