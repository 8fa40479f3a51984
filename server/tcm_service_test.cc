// The request-to-response path of tcm.v1.TcmService, without sockets and
// without LibTorch: the service runs in an in-process gRPC server and hands
// its requests to a fake GenerationQueue, which the test plays the workers of.
#include "server/tcm_service.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "server/access_log_hooks.h"
#include "server/fake_generation_queue.h"
#include "server/metrics.h"
#include "server/metrics_test_util.h"
#include "server/served_model_test_util.h"

namespace tcm {
namespace {

using grpc::StatusCode;

// A 2x2 single-channel image whose every byte is `value`.
constexpr int kSide = 2, kChannels = 1;
void FinishImage(RequestState& request, unsigned index, uint8_t value) {
  const std::vector<uint8_t> pixels(kSide * kSide * kChannels, value);
  request.ImageDone(index, pixels.data(), kSide, kSide, kChannels);
}

v1::GenerateRequest Request(const std::string& model, std::optional<int64_t> class_label, unsigned steps,
                            unsigned num_images, uint64_t seed) {
  v1::GenerateRequest request;
  request.set_model(model);
  if (class_label) request.set_class_label(*class_label);
  request.set_steps(steps);
  request.set_num_images(num_images);
  request.set_seed(seed);
  request.set_format(v1::IMAGE_FORMAT_RAW);
  return request;
}

using testing::Sample;

class TcmServiceFixture : public ::testing::Test {
 protected:
  TcmServiceFixture() {
    ServedModel cond = testing::TenClassModel("cond", kSide, kChannels);
    cond.max_images = 8;
    cond.architecture = "SongUNet";
    cond.mid_t = 0.821;
    cond.t_max = 80;
    cond.class_names = testing::DigitNames();
    ServedModel uncond = testing::Unconditional(cond, "uncond");
    uncond.default_steps = 2;
    cond.precision = "bf16";
    uncond.precision = "fp32";
    models_ = {cond, uncond};
    metrics_ = std::make_unique<ServerMetrics>(models_);
    TcmServiceImpl::Options options;
    options.default_model = 0;
    service_ = std::make_unique<TcmServiceImpl>(options, models_, &queue_, metrics_.get());
    grpc::ServerBuilder builder;
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    stub_ = v1::TcmService::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));
  }
  ~TcmServiceFixture() override { server_->Shutdown(); }

  // A unary call on its own thread.
  std::future<std::pair<grpc::Status, v1::GenerateResponse>> CallAsync(const v1::GenerateRequest& request,
                                                                       grpc::ClientContext* context) {
    return std::async(std::launch::async, [this, request, context] {
      v1::GenerateResponse response;
      grpc::Status status = stub_->Generate(context, request, &response);
      return std::make_pair(status, response);
    });
  }

  grpc::Status Call(const v1::GenerateRequest& request) {
    grpc::ClientContext context;
    v1::GenerateResponse response;
    return stub_->Generate(&context, request, &response);
  }

  double Metric(const std::string& name, const std::map<std::string, std::string>& labels) {
    return Sample(*metrics_->registry(), name, labels).value_or(0);
  }

  std::vector<ServedModel> models_;
  testing::FakeGenerationQueue queue_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<TcmServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::TcmService::Stub> stub_;
};

// The same service with a response cache.
class TcmServiceCacheTest : public TcmServiceFixture {
 protected:
  TcmServiceCacheTest() {
    server_->Shutdown();
    server_.reset();
    TcmServiceImpl::Options options;
    options.cache = &cache_;
    service_ = std::make_unique<TcmServiceImpl>(options, models_, &queue_, metrics_.get());
    grpc::ServerBuilder builder;
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    stub_ = v1::TcmService::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));
  }
  ResponseCache cache_{1 << 20};
};

// The same service under an open-call limit of one.
class TcmServiceOpenCallTest : public TcmServiceFixture {
 protected:
  TcmServiceOpenCallTest() {
    server_->Shutdown();
    server_.reset();
    TcmServiceImpl::Options options;
    options.open_calls = limit_;
    service_ = std::make_unique<TcmServiceImpl>(options, models_, &queue_, metrics_.get());
    grpc::ServerBuilder builder;
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    stub_ = v1::TcmService::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));
  }
  const std::shared_ptr<OpenCallLimit> limit_ = std::make_shared<OpenCallLimit>(1);
};

// The same service behind the access log's interceptor, writing to a file.
class TcmServiceAccessLogTest : public TcmServiceFixture {
 protected:
  TcmServiceAccessLogTest() {
    path_ = ::testing::TempDir() + "/tcm_service_test_access." + std::to_string(getpid()) + ".log";
    std::remove(path_.c_str());
    log_ = *AccessLog::Open(path_);
    StartLogging(TcmServiceImpl::Options());
  }
  ~TcmServiceAccessLogTest() override { std::remove(path_.c_str()); }

  // Serves with `options` and this test's access log, in place of any server before.
  void StartLogging(TcmServiceImpl::Options options) {
    if (server_) server_->Shutdown();
    server_.reset();
    options.access_log = log_.get();
    service_ = std::make_unique<TcmServiceImpl>(options, models_, &queue_, metrics_.get());
    grpc::ServerBuilder builder;
    builder.RegisterService(service_.get());
    builder.experimental().SetInterceptorCreators(AccessLogInterceptors(log_.get()));
    server_ = builder.BuildAndStart();
    stub_ = v1::TcmService::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));
  }

  // The log's lines once it has `n` (waiting up to 30 s: a cancelled call's
  // line is written when the server lets go of the call).
  std::vector<nlohmann::json> Lines(size_t n) {
    std::vector<nlohmann::json> lines;
    for (int i = 0; i < 3000; ++i) {
      lines.clear();
      std::ifstream in(path_);
      for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
      if (lines.size() >= n) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return lines;
  }

  std::string path_;
  std::unique_ptr<AccessLog> log_;
};

using TcmServiceValidationTest = TcmServiceFixture;
using TcmServiceUnaryTest = TcmServiceFixture;
using TcmServiceStreamTest = TcmServiceFixture;
using TcmServiceCancellationTest = TcmServiceFixture;
using TcmServiceDrainTest = TcmServiceFixture;
using TcmServiceMetricsTest = TcmServiceFixture;
using TcmServiceListModelsTest = TcmServiceFixture;

TEST_F(TcmServiceValidationTest, BadRequestsNameTheFieldAndQueueNothing) {
  struct Case {
    v1::GenerateRequest request;
    StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {Request("cond", 1, 3, 1, 1), StatusCode::INVALID_ARGUMENT,
       "steps: must be 1 or 2 (0 = the model's default, 1), got 3"},
      {Request("nope", 1, 1, 1, 1), StatusCode::NOT_FOUND, "model: 'nope' is not served (available: cond, uncond)"},
      {Request("cond", 10, 1, 1, 1), StatusCode::INVALID_ARGUMENT,
       "class_label: must be in [0, 10) for model 'cond', got 10"},
      {Request("uncond", 1, 1, 1, 1), StatusCode::INVALID_ARGUMENT,
       "class_label: model 'uncond' is unconditional; leave class_label unset"},
      {Request("cond", 1, 1, 9, 1), StatusCode::INVALID_ARGUMENT,
       "num_images: must be at most 8 for model 'cond' (0 = 1), got 9"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.request.ShortDebugString());
    const grpc::Status unary = Call(c.request);
    EXPECT_EQ(unary.error_code(), c.code);
    EXPECT_EQ(unary.error_message(), c.message);

    grpc::ClientContext context;
    auto reader = stub_->GenerateStream(&context, c.request);
    v1::GenerateStreamResponse message;
    EXPECT_FALSE(reader->Read(&message));
    const grpc::Status stream = reader->Finish();
    EXPECT_EQ(stream.error_code(), c.code);
    EXPECT_EQ(stream.error_message(), c.message);
  }
  EXPECT_EQ(queue_.submitted(), 0u);
  EXPECT_EQ(Metric("tcm_requests_total", {{"model", "cond"}, {"steps", "invalid"}, {"code", "INVALID_ARGUMENT"}}), 2);
  EXPECT_EQ(Metric("tcm_requests_total", {{"model", "unknown"}, {"code", "NOT_FOUND"}}), 2);
}

TEST_F(TcmServiceUnaryTest, ImagesFinishedOutOfOrderComeBackByIndex) {
  grpc::ClientContext context;
  auto call = CallAsync(Request("cond", 7, 2, 3, 42), &context);
  auto request = queue_.WaitForRequest(0);
  ASSERT_NE(request, nullptr);
  EXPECT_EQ(request->spec().model_name, "cond");
  EXPECT_EQ(request->spec().steps, 2u);
  EXPECT_EQ(request->spec().num_images, 3u);
  EXPECT_EQ(request->spec().seed, 42u);
  EXPECT_EQ(request->spec().class_labels, std::vector<int64_t>({7, 7, 7}));

  FinishImage(*request, 2, 20);
  FinishImage(*request, 0, 0);
  FinishImage(*request, 1, 10);
  auto [status, response] = call.get();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.model(), "cond");
  EXPECT_EQ(response.steps(), 2u);
  EXPECT_EQ(response.seed(), 42u);
  ASSERT_EQ(response.images_size(), 3);
  for (int i = 0; i < 3; ++i) {
    const v1::Image& image = response.images(i);
    EXPECT_EQ(image.index(), static_cast<uint32_t>(i));
    EXPECT_EQ(image.data(), std::string(kSide * kSide * kChannels, static_cast<char>(10 * i)));
    EXPECT_EQ(image.width(), static_cast<uint32_t>(kSide));
    EXPECT_EQ(image.height(), static_cast<uint32_t>(kSide));
    EXPECT_EQ(image.channels(), static_cast<uint32_t>(kChannels));
    EXPECT_EQ(image.class_label(), 7);
    EXPECT_EQ(image.seed(), 42u);
  }
  EXPECT_GT(response.timings().total_seconds(), 0) << "the call's own time is measured";
}

TEST_F(TcmServiceUnaryTest, AFailedImageFailsTheCallWithoutPartialImages) {
  grpc::ClientContext context;
  auto call = CallAsync(Request("cond", 1, 1, 2, 3), &context);
  auto request = queue_.WaitForRequest(0);
  ASSERT_NE(request, nullptr);
  FinishImage(*request, 0, 1);
  request->Fail(absl::InternalError("batch failed: out of memory"));
  FinishImage(*request, 1, 2);  // too late: ignored
  auto [status, response] = call.get();
  EXPECT_EQ(status.error_code(), StatusCode::INTERNAL);
  EXPECT_EQ(status.error_message(), "batch failed: out of memory");
  EXPECT_EQ(response.images_size(), 0);
}

TEST_F(TcmServiceStreamTest, ImagesArriveInCompletionOrderThenTheStatus) {
  grpc::ClientContext context;
  auto reader = stub_->GenerateStream(&context, Request("uncond", std::nullopt, 0, 3, 9));
  auto request = queue_.WaitForRequest(0);
  ASSERT_NE(request, nullptr);
  EXPECT_EQ(request->spec().steps, 2u) << "steps 0 is the model's default";
  EXPECT_EQ(request->spec().class_labels, std::vector<int64_t>({-1, -1, -1}));

  v1::GenerateStreamResponse message;
  FinishImage(*request, 1, 11);
  ASSERT_TRUE(reader->Read(&message));
  EXPECT_EQ(message.image().index(), 1u);
  EXPECT_EQ(message.model(), "uncond");
  EXPECT_EQ(message.steps(), 2u);
  FinishImage(*request, 2, 22);
  FinishImage(*request, 0, 0);
  ASSERT_TRUE(reader->Read(&message));
  EXPECT_EQ(message.image().index(), 2u);
  EXPECT_EQ(message.image().data(), std::string(kSide * kSide * kChannels, 22));
  ASSERT_TRUE(reader->Read(&message));
  EXPECT_EQ(message.image().index(), 0u);
  EXPECT_FALSE(reader->Read(&message));
  const grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
}

// Previews: each image's first-step result, flagged, ahead of its final
// image; they are not images of the ledger. Generate refuses them.
TEST_F(TcmServiceStreamTest, PreviewsComeAheadOfTheirFinalImagesOnStreamsOnly) {
  v1::GenerateRequest asked = Request("cond", 4, 2, 2, 9);
  asked.set_preview(true);
  EXPECT_EQ(Call(asked).error_message(),
            "preview: only GenerateStream sends previews; Generate answers once with the final images");
  EXPECT_EQ(queue_.submitted(), 0u);

  grpc::ClientContext context;
  auto reader = stub_->GenerateStream(&context, asked);
  auto request = queue_.WaitForRequest(0);
  ASSERT_NE(request, nullptr);
  EXPECT_TRUE(request->spec().preview);
  const std::vector<uint8_t> first(kSide * kSide * kChannels, 3);
  request->PreviewDone(1, first.data(), kSide, kSide, kChannels);
  request->PreviewDone(0, first.data(), kSide, kSide, kChannels);
  FinishImage(*request, 1, 31);
  FinishImage(*request, 0, 30);
  std::vector<std::pair<unsigned, bool>> order;
  v1::GenerateStreamResponse message;
  while (reader->Read(&message)) {
    order.emplace_back(message.image().index(), message.preview());
    if (message.preview()) EXPECT_EQ(message.image().data(), std::string(first.begin(), first.end()));
    EXPECT_EQ(message.steps(), 2u);
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(order, (std::vector<std::pair<unsigned, bool>>{{1, true}, {0, true}, {1, false}, {0, false}}));
  EXPECT_EQ(Metric("tcm_images_generated_total", {{"model", "cond"}, {"steps", "2"}}), 2) << "previews are not images";

  // Without preview asked, a first-step result goes nowhere.
  grpc::ClientContext plain_context;
  auto plain = stub_->GenerateStream(&plain_context, Request("cond", 4, 2, 1, 9));
  auto plain_request = queue_.WaitForRequest(1);
  ASSERT_NE(plain_request, nullptr);
  plain_request->PreviewDone(0, first.data(), kSide, kSide, kChannels);
  FinishImage(*plain_request, 0, 7);
  ASSERT_TRUE(plain->Read(&message));
  EXPECT_FALSE(message.preview());
  EXPECT_FALSE(plain->Read(&message));
  EXPECT_TRUE(plain->Finish().ok());
}

TEST_F(TcmServiceStreamTest, AFailureEndsTheStreamAfterTheImagesSent) {
  grpc::ClientContext context;
  auto reader = stub_->GenerateStream(&context, Request("cond", 2, 1, 3, 9));
  auto request = queue_.WaitForRequest(0);
  ASSERT_NE(request, nullptr);
  FinishImage(*request, 0, 5);
  v1::GenerateStreamResponse message;
  ASSERT_TRUE(reader->Read(&message));
  EXPECT_EQ(message.image().index(), 0u);
  request->Fail(absl::InternalError("batch failed"));
  EXPECT_FALSE(reader->Read(&message));
  EXPECT_EQ(reader->Finish().error_code(), StatusCode::INTERNAL);
}

TEST_F(TcmServiceCancellationTest, ACancelledCallIsAbandonedAndEndsCancelled) {
  for (bool stream : {false, true}) {
    SCOPED_TRACE(stream ? "GenerateStream" : "Generate");
    grpc::ClientContext context;
    std::future<grpc::Status> call;
    std::unique_ptr<grpc::ClientReader<v1::GenerateStreamResponse>> reader;
    if (stream) {
      reader = stub_->GenerateStream(&context, Request("cond", 1, 2, 2, 1));
    } else {
      call = std::async(std::launch::async, [&] {
        v1::GenerateResponse response;
        return stub_->Generate(&context, Request("cond", 1, 2, 2, 1), &response);
      });
    }
    auto request = queue_.WaitForRequest(stream ? 1 : 0);
    ASSERT_NE(request, nullptr);
    EXPECT_TRUE(request->Abandoned(absl::Now()).ok());
    context.TryCancel();
    // The service marks the request; the batcher would drop its images.
    const absl::Status abandoned = testing::WaitUntilAbandoned(*request);
    EXPECT_EQ(abandoned.code(), absl::StatusCode::kCancelled) << abandoned;
    request->Fail(abandoned);
    const grpc::Status status = stream ? reader->Finish() : call.get();
    EXPECT_EQ(status.error_code(), StatusCode::CANCELLED);
  }
  EXPECT_EQ(Metric("tcm_requests_in_flight", {{"model", "cond"}}), 0);
  EXPECT_EQ(Metric("tcm_client_cancellations_total", {{"model", "cond"}}), 2);
}

TEST_F(TcmServiceCancellationTest, TheCallsDeadlineTravelsWithTheRequest) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto call = CallAsync(Request("cond", 1, 1, 1, 1), &context);
  auto request = queue_.WaitForRequest(0);
  ASSERT_NE(request, nullptr);
  EXPECT_TRUE(request->Abandoned(absl::Now()).ok());
  EXPECT_EQ(request->Abandoned(absl::Now() + absl::Seconds(61)).code(), absl::StatusCode::kDeadlineExceeded);
  FinishImage(*request, 0, 1);
  EXPECT_TRUE(call.get().first.ok());
}

TEST_F(TcmServiceDrainTest, RefusedSubmissionsAnswerAtOnceWithTheQueuesReason) {
  queue_.RefuseWith(absl::UnavailableError("the server is shutting down"));
  grpc::Status status = Call(Request("cond", 1, 1, 1, 1));
  EXPECT_EQ(status.error_code(), StatusCode::UNAVAILABLE);
  EXPECT_EQ(status.error_message(), "the server is shutting down");

  queue_.RefuseWith(absl::ResourceExhaustedError("queue full"));
  grpc::ClientContext context;
  auto reader = stub_->GenerateStream(&context, Request("cond", 1, 1, 1, 1));
  v1::GenerateStreamResponse message;
  EXPECT_FALSE(reader->Read(&message));
  EXPECT_EQ(reader->Finish().error_code(), StatusCode::RESOURCE_EXHAUSTED);

  EXPECT_EQ(Metric("tcm_requests_total", {{"model", "cond"}, {"steps", "1"}, {"code", "UNAVAILABLE"}}), 1);
  EXPECT_EQ(Metric("tcm_requests_total", {{"model", "cond"}, {"steps", "1"}, {"code", "RESOURCE_EXHAUSTED"}}), 1);
  EXPECT_EQ(Metric("tcm_requests_in_flight", {{"model", "cond"}}), 0);
}

TEST_F(TcmServiceMetricsTest, CountsRequestsImagesAndCallsInFlight) {
  grpc::ClientContext context;
  auto call = CallAsync(Request("cond", 3, 2, 2, 5), &context);
  auto request = queue_.WaitForRequest(0);
  ASSERT_NE(request, nullptr);
  EXPECT_EQ(Metric("tcm_requests_in_flight", {{"model", "cond"}}), 1);
  FinishImage(*request, 0, 0);
  FinishImage(*request, 1, 1);
  ASSERT_TRUE(call.get().first.ok());
  EXPECT_EQ(Metric("tcm_requests_in_flight", {{"model", "cond"}}), 0);
  EXPECT_EQ(Metric("tcm_requests_total", {{"model", "cond"}, {"steps", "2"}, {"code", "OK"}}), 1);
  EXPECT_EQ(Metric("tcm_images_generated_total", {{"model", "cond"}, {"steps", "2"}}), 2);
  EXPECT_EQ(Metric("tcm_request_duration_seconds", {{"model", "cond"}, {"steps", "2"}}), 1);
}

// The image ledger: each accepted image ends counted once, as generated
// (handed to its caller) or dropped with the reason its call ended.
TEST_F(TcmServiceMetricsTest, EveryAcceptedImageIsCountedOnceAsGeneratedOrDropped) {
  {  // A stream: the image sent counts as generated; the other two are dropped.
    grpc::ClientContext context;
    auto reader = stub_->GenerateStream(&context, Request("cond", 1, 1, 3, 5));
    auto request = queue_.WaitForRequest(0);
    ASSERT_NE(request, nullptr);
    FinishImage(*request, 0, 0);
    v1::GenerateStreamResponse message;
    ASSERT_TRUE(reader->Read(&message));
    request->DropImage(absl::DeadlineExceededError("the call's deadline passed while it was queued"));
    const absl::Status abandoned = request->Abandoned(absl::Now());
    EXPECT_EQ(abandoned.code(), absl::StatusCode::kDeadlineExceeded)
        << "an ended call's images are dropped for its reason";
    request->DropImage(abandoned);
    EXPECT_FALSE(reader->Read(&message));
    EXPECT_EQ(reader->Finish().error_code(), StatusCode::DEADLINE_EXCEEDED);
  }
  {  // A unary call: the image held for the answer is dropped when the call fails.
    grpc::ClientContext context;
    auto call = CallAsync(Request("cond", 1, 2, 3, 5), &context);
    auto request = queue_.WaitForRequest(1);
    ASSERT_NE(request, nullptr);
    FinishImage(*request, 0, 0);
    request->DropImage(absl::CancelledError("the client cancelled the call"));  // image 1
    EXPECT_EQ(call.get().first.error_code(), StatusCode::CANCELLED);
    FinishImage(*request, 2, 2);  // computed after the call ended: dropped too
  }
  EXPECT_EQ(Metric("tcm_images_accepted_total", {{"model", "cond"}}), 6);
  EXPECT_EQ(Metric("tcm_images_generated_total", {{"model", "cond"}, {"steps", "1"}}), 1);
  EXPECT_EQ(Metric("tcm_images_dropped_total", {{"model", "cond"}, {"reason", "deadline"}}), 2);
  EXPECT_EQ(Metric("tcm_images_dropped_total", {{"model", "cond"}, {"reason", "cancelled"}}), 3);
  EXPECT_EQ(Metric("tcm_images_generated_total", {{"model", "cond"}, {"steps", "2"}}), 0);
}

// Seeded images computed once come back from the cache byte for byte
// without queue or compute; a larger request computes only its new images.
TEST_F(TcmServiceCacheTest, CachedImagesSkipTheQueueAndOnlyNewOnesAreComputed) {
  grpc::ClientContext first_context;
  auto first_call = CallAsync(Request("cond", 3, 1, 4, 42), &first_context);
  auto first = queue_.WaitForRequest(0);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->indices_to_compute(), (std::vector<unsigned>{0, 1, 2, 3}));
  for (unsigned i = 0; i < 4; ++i) FinishImage(*first, i, static_cast<uint8_t>(10 * i));
  auto [first_status, first_response] = first_call.get();
  ASSERT_TRUE(first_status.ok()) << first_status.error_message();

  grpc::ClientContext second_context;
  auto second_call = CallAsync(Request("cond", 3, 1, 8, 42), &second_context);
  auto second = queue_.WaitForRequest(1);
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->indices_to_compute(), (std::vector<unsigned>{4, 5, 6, 7}));
  for (unsigned i = 4; i < 8; ++i) FinishImage(*second, i, static_cast<uint8_t>(10 * i));
  auto [second_status, second_response] = second_call.get();
  ASSERT_TRUE(second_status.ok()) << second_status.error_message();
  ASSERT_EQ(second_response.images_size(), 8);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(second_response.images(i).index(), static_cast<uint32_t>(i));
    EXPECT_EQ(second_response.images(i).data(), std::string(kSide * kSide * kChannels, static_cast<char>(10 * i)));
  }
  EXPECT_EQ(Metric("tcm_cache_hits_total", {{"model", "cond"}}), 4);
  EXPECT_EQ(Metric("tcm_cache_misses_total", {{"model", "cond"}}), 8);

  // All cached: nothing to compute, answered at once.
  v1::GenerateResponse again;
  grpc::ClientContext again_context;
  ASSERT_TRUE(stub_->Generate(&again_context, Request("cond", 3, 1, 8, 42), &again).ok());
  EXPECT_EQ(again.images(7).data(), second_response.images(7).data());
  ASSERT_NE(queue_.WaitForRequest(2), nullptr);
  EXPECT_TRUE(queue_.WaitForRequest(2)->indices_to_compute().empty());
  EXPECT_EQ(Metric("tcm_cache_hits_total", {{"model", "cond"}}), 12);
  EXPECT_EQ(Metric("tcm_images_generated_total", {{"model", "cond"}, {"steps", "1"}}), 4 + 8 + 8);

  // Another class, steps or seed, or no seed at all: not from the cache.
  for (const v1::GenerateRequest& other :
       {Request("cond", 4, 1, 1, 42), Request("cond", 3, 2, 1, 42), Request("cond", 3, 1, 1, 43)}) {
    grpc::ClientContext context;
    const size_t n = queue_.submitted();
    auto call = CallAsync(other, &context);
    auto request = queue_.WaitForRequest(n);
    ASSERT_NE(request, nullptr);
    EXPECT_EQ(request->indices_to_compute(), (std::vector<unsigned>{0})) << other.ShortDebugString();
    FinishImage(*request, 0, 1);
    EXPECT_TRUE(call.get().first.ok());
  }
  v1::GenerateRequest unseeded = Request("cond", 3, 1, 1, 0);
  unseeded.clear_seed();
  grpc::ClientContext unseeded_context;
  const size_t n = queue_.submitted();
  auto unseeded_call = CallAsync(unseeded, &unseeded_context);
  auto request = queue_.WaitForRequest(n);
  ASSERT_NE(request, nullptr);
  FinishImage(*request, 0, 1);
  EXPECT_TRUE(unseeded_call.get().first.ok());
  EXPECT_EQ(Metric("tcm_cache_misses_total", {{"model", "cond"}}), 8 + 3) << "a call without a seed is not looked up";
  EXPECT_EQ(Metric("tcm_cache_hits_total", {{"model", "cond"}}), 12);

  // A stream asking for previews of a cached image computes it: the previews need the first step.
  v1::GenerateRequest with_preview = Request("cond", 3, 2, 1, 42);  // cached above
  with_preview.set_preview(true);
  grpc::ClientContext preview_context;
  const size_t before_preview = queue_.submitted();
  auto reader = stub_->GenerateStream(&preview_context, with_preview);
  auto previewed = queue_.WaitForRequest(before_preview);
  ASSERT_NE(previewed, nullptr);
  EXPECT_EQ(previewed->indices_to_compute(), (std::vector<unsigned>{0}));
  const std::vector<uint8_t> first_step(kSide * kSide * kChannels, 5);
  previewed->PreviewDone(0, first_step.data(), kSide, kSide, kChannels);
  FinishImage(*previewed, 0, 6);
  v1::GenerateStreamResponse message;
  ASSERT_TRUE(reader->Read(&message));
  EXPECT_TRUE(message.preview());
  ASSERT_TRUE(reader->Read(&message));
  EXPECT_FALSE(message.preview());
  EXPECT_FALSE(reader->Read(&message));
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(Metric("tcm_cache_hits_total", {{"model", "cond"}}), 12) << "not looked up";
  EXPECT_EQ(Metric("tcm_cache_misses_total", {{"model", "cond"}}), 8 + 3);
}

TEST_F(TcmServiceListModelsTest, DescribesEveryModelAndMarksTheDefault) {
  grpc::ClientContext context;
  v1::ListModelsResponse response;
  ASSERT_TRUE(stub_->ListModels(&context, v1::ListModelsRequest(), &response).ok());
  ASSERT_EQ(response.models_size(), 2);
  const v1::ModelInfo& cond = response.models(0);
  EXPECT_EQ(cond.name(), "cond");
  EXPECT_TRUE(cond.is_default());
  EXPECT_EQ(cond.num_classes(), 10u);
  EXPECT_EQ(cond.class_names_size(), 10);
  EXPECT_EQ(cond.class_names(3), "three");
  EXPECT_EQ(cond.architecture(), "SongUNet");
  EXPECT_EQ(cond.resolution(), static_cast<uint32_t>(kSide));
  EXPECT_FLOAT_EQ(cond.mid_t(), 0.821f);
  EXPECT_FLOAT_EQ(cond.t_max(), 80.0f);
  EXPECT_EQ(cond.precision(), "bf16");
  EXPECT_EQ(response.models(1).name(), "uncond");
  EXPECT_EQ(response.models(1).precision(), "fp32");
  EXPECT_FALSE(response.models(1).is_default());
  EXPECT_EQ(response.models(1).default_steps(), 2u);
}

TEST_F(TcmServiceAccessLogTest, EachCallWritesOneLineWithWhatItGenerated) {
  grpc::ClientContext context;
  auto call = CallAsync(Request("cond", 3, 2, 2, 7), &context);
  auto request = queue_.WaitForRequest(0);
  ASSERT_NE(request, nullptr);
  request->AddQueueWait(0.25);
  request->AddCompute(0.5);
  FinishImage(*request, 0, 1);
  FinishImage(*request, 1, 2);
  ASSERT_TRUE(call.get().first.ok());
  EXPECT_EQ(Call(Request("cond", 99, 1, 1, 1)).error_code(), StatusCode::INVALID_ARGUMENT);
  grpc::ClientContext list_context;
  v1::ListModelsResponse list;
  ASSERT_TRUE(stub_->ListModels(&list_context, v1::ListModelsRequest(), &list).ok());

  const std::vector<nlohmann::json> lines = Lines(3);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["protocol"], "grpc");
  EXPECT_EQ(lines[0]["method"], "/tcm.v1.TcmService/Generate");
  EXPECT_EQ(lines[0]["model"], "cond");
  EXPECT_EQ(lines[0]["steps"], 2);
  EXPECT_EQ(lines[0]["images"], 2);
  EXPECT_EQ(lines[0]["status"], "OK");
  EXPECT_DOUBLE_EQ(lines[0]["queue_seconds"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(lines[0]["compute_seconds"].get<double>(), 0.5);
  EXPECT_GE(lines[0]["total_seconds"].get<double>(), 0);
  EXPECT_EQ(lines[1]["method"], "/tcm.v1.TcmService/Generate");
  EXPECT_EQ(lines[1]["status"], "INVALID_ARGUMENT");
  EXPECT_EQ(lines[1]["model"], "");  // refused before it was queued
  EXPECT_EQ(lines[1]["images"], 0);
  EXPECT_EQ(lines[2]["method"], "/tcm.v1.TcmService/ListModels");
  EXPECT_EQ(lines[2]["status"], "OK");
}

// The access log under an open-call limit of one.
class TcmServiceAccessLogRefusalTest : public TcmServiceAccessLogTest {
 protected:
  TcmServiceAccessLogRefusalTest() {
    TcmServiceImpl::Options options;
    options.open_calls = limit_;
    StartLogging(options);
  }
  // Waits (up to 30 s) until no call holds a place: a call's place is given
  // back when its reactor goes, once its answer is sent.
  void WaitUntilNoneOpen() {
    for (int i = 0; i < 3000 && limit_->open() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_EQ(limit_->open(), 0);
  }
  const std::shared_ptr<OpenCallLimit> limit_ = std::make_shared<OpenCallLimit>(1);
};

TEST_F(TcmServiceAccessLogRefusalTest, CallsRefusedBeforeTheyWereQueuedLogNoModelAndNoImages) {
  // Refused by a full queue, then by draining: nothing was queued.
  queue_.RefuseWith(absl::ResourceExhaustedError("the queue of model 'cond' is full"));
  EXPECT_EQ(Call(Request("cond", 3, 2, 4, 7)).error_code(), StatusCode::RESOURCE_EXHAUSTED);
  WaitUntilNoneOpen();
  queue_.RefuseWith(absl::UnavailableError("the server is shutting down"));
  EXPECT_EQ(Call(Request("cond", 3, 2, 4, 7)).error_code(), StatusCode::UNAVAILABLE);
  WaitUntilNoneOpen();
  queue_.RefuseWith(absl::OkStatus());
  // Refused by the open-call limit while one call is open.
  grpc::ClientContext context;
  auto open = CallAsync(Request("cond", 3, 2, 1, 8), &context);
  auto request = queue_.WaitForRequest(0);
  ASSERT_NE(request, nullptr);
  EXPECT_EQ(Call(Request("uncond", std::nullopt, 1, 3, 9)).error_code(), StatusCode::RESOURCE_EXHAUSTED);
  FinishImage(*request, 0, 1);
  ASSERT_TRUE(open.get().first.ok());

  const std::vector<nlohmann::json> lines = Lines(4);
  ASSERT_EQ(lines.size(), 4u);
  // In the order the calls ended: the open call's line comes last.
  const std::vector<std::string> statuses = {"RESOURCE_EXHAUSTED", "UNAVAILABLE", "RESOURCE_EXHAUSTED"};
  for (size_t i = 0; i < statuses.size(); ++i) {
    SCOPED_TRACE(lines[i].dump());
    EXPECT_EQ(lines[i]["status"], statuses[i]);
    EXPECT_EQ(lines[i]["model"], "");
    EXPECT_EQ(lines[i]["steps"], 0);
    EXPECT_EQ(lines[i]["images"], 0);
  }
  EXPECT_EQ(lines[3]["status"], "OK");
  EXPECT_EQ(lines[3]["model"], "cond");
  EXPECT_EQ(lines[3]["steps"], 2);
  EXPECT_EQ(lines[3]["images"], 1);
}

TEST_F(TcmServiceAccessLogTest, ACancelledStreamWritesItsLineWithCancelled) {
  grpc::ClientContext context;
  auto reader = stub_->GenerateStream(&context, Request("cond", 1, 2, 3, 1));
  auto request = queue_.WaitForRequest(0);
  ASSERT_NE(request, nullptr);
  context.TryCancel();
  const absl::Status abandoned = testing::WaitUntilAbandoned(*request);
  request->Fail(abandoned);
  EXPECT_EQ(reader->Finish().error_code(), StatusCode::CANCELLED);
  const std::vector<nlohmann::json> lines = Lines(1);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["method"], "/tcm.v1.TcmService/GenerateStream");
  EXPECT_EQ(lines[0]["status"], "CANCELLED");
  EXPECT_EQ(lines[0]["model"], "cond");
  EXPECT_EQ(lines[0]["images"], 3);
}

TEST_F(TcmServiceOpenCallTest, ACallBeyondTheLimitIsRefusedUntilAnOpenOneIsAnswered) {
  grpc::ClientContext context;
  auto first = CallAsync(Request("cond", 7, 1, 1, 42), &context);
  auto request = queue_.WaitForRequest(0);
  ASSERT_NE(request, nullptr);
  EXPECT_EQ(limit_->open(), 1);

  const grpc::Status refused = Call(Request("cond", 7, 1, 1, 43));
  EXPECT_EQ(refused.error_code(), StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(refused.error_message(), "the server holds its limit of 1 open calls (--max_open_calls); retry later");
  EXPECT_EQ(queue_.submitted(), 1u) << "the refused call queues nothing";
  EXPECT_EQ(Metric("tcm_requests_total", {{"model", "cond"}, {"steps", "1"}, {"code", "RESOURCE_EXHAUSTED"}}), 1);

  FinishImage(*request, 0, 5);
  EXPECT_TRUE(first.get().first.ok());
  // The place is given back when the call's reactor goes, once its answer is sent.
  for (int i = 0; i < 3000 && limit_->open() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(limit_->open(), 0);
  grpc::ClientContext again_context;
  auto again = CallAsync(Request("cond", 7, 1, 1, 44), &again_context);
  auto again_request = queue_.WaitForRequest(1);
  ASSERT_NE(again_request, nullptr);
  FinishImage(*again_request, 0, 6);
  EXPECT_TRUE(again.get().first.ok());
}

}  // namespace
}  // namespace tcm
