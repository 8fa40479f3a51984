// inference.GRPCInferenceService without sockets and without LibTorch: the
// service runs in an in-process gRPC server and hands its calls to a fake
// GenerationQueue, which the test plays the workers of.
#include "server/inference_service.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "server/fake_generation_queue.h"
#include "server/metrics.h"
#include "server/metrics_test_util.h"
#include "server/served_model_test_util.h"

namespace tcm {
namespace {

using grpc::StatusCode;

constexpr int kSide = 2, kChannels = 3;

class InferenceServiceTest : public ::testing::Test {
 protected:
  InferenceServiceTest() {
    const ServedModel cond = testing::TenClassModel("cond", kSide, kChannels);
    models_ = {cond, testing::Unconditional(cond, "uncond")};
    metrics_ = std::make_unique<ServerMetrics>(models_);
    GenerationFront::Options options;
    options.default_model = 0;
    service_ = std::make_unique<InferenceServiceImpl>(
        options, models_, &queue_, metrics_.get(),
        [this](const std::string& name) { return name == "uncond" ? false : ready_.load(); });
    grpc::ServerBuilder builder;
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    stub_ = inference::GRPCInferenceService::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));
  }
  ~InferenceServiceTest() override { server_->Shutdown(); }

  std::future<std::pair<grpc::Status, inference::ModelInferResponse>> InferAsync(
      const inference::ModelInferRequest& request) {
    return std::async(std::launch::async, [this, request] {
      grpc::ClientContext context;
      inference::ModelInferResponse response;
      grpc::Status status = stub_->ModelInfer(&context, request, &response);
      return std::make_pair(status, response);
    });
  }

  std::vector<ServedModel> models_;
  testing::FakeGenerationQueue queue_;
  std::atomic<bool> ready_{true};
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<InferenceServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub_;
};

inference::ModelInferRequest ClassRequest(const std::vector<int64_t>& labels, int64_t seed) {
  inference::ModelInferRequest request;
  request.set_model_name("cond");
  request.set_id("req-1");
  auto* input = request.add_inputs();
  input->set_name("class_label");
  input->set_datatype("INT64");
  input->add_shape(static_cast<int64_t>(labels.size()));
  for (int64_t l : labels) input->mutable_contents()->add_int64_contents(l);
  (*request.mutable_parameters())["seed"].set_int64_param(seed);
  return request;
}

TEST_F(InferenceServiceTest, ModelInferQueuesOneImagePerClassAndAnswersWithOneTensor) {
  auto call = InferAsync(ClassRequest({4, 2}, 11));
  std::shared_ptr<RequestState> request = queue_.WaitForRequest(0);
  ASSERT_NE(request, nullptr);
  EXPECT_EQ(request->spec().class_labels, (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(request->spec().seed, 11u);
  EXPECT_EQ(request->spec().format, v1::IMAGE_FORMAT_RAW);
  // Finished out of order, as batches may.
  const std::vector<uint8_t> second(kSide * kSide * kChannels, 200), first(kSide * kSide * kChannels, 100);
  request->ImageDone(1, second.data(), kSide, kSide, kChannels);
  request->ImageDone(0, first.data(), kSide, kSide, kChannels);
  auto [status, response] = call.get();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.id(), "req-1");
  EXPECT_EQ(response.model_name(), "cond");
  EXPECT_EQ(response.parameters().at("seed").int64_param(), 11);
  ASSERT_EQ(response.outputs_size(), 1);
  EXPECT_EQ(std::vector<int64_t>(response.outputs(0).shape().begin(), response.outputs(0).shape().end()),
            (std::vector<int64_t>{2, kSide, kSide, kChannels}));
  EXPECT_EQ(response.raw_output_contents(0),
            std::string(first.begin(), first.end()) + std::string(second.begin(), second.end()));
  EXPECT_EQ(testing::Sample(*metrics_->registry(), "tcm_images_generated_total", {{"model", "cond"}}, true), 2);
}

TEST_F(InferenceServiceTest, BadCallsNameWhatIsWrongAndQueueNothing) {
  grpc::ClientContext c1;
  inference::ModelInferResponse response;
  grpc::Status bad_class = stub_->ModelInfer(&c1, ClassRequest({12}, 1), &response);
  EXPECT_EQ(bad_class.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(bad_class.error_message(), "input 'class_label'[0]: must be in [0, 10) for model 'cond', got 12");
  inference::ModelInferRequest unknown = ClassRequest({1}, 1);
  unknown.set_model_name("nope");
  grpc::ClientContext c2;
  EXPECT_EQ(stub_->ModelInfer(&c2, unknown, &response).error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(queue_.submitted(), 0u);
  EXPECT_EQ(
      testing::Sample(*metrics_->registry(), "tcm_requests_total", {{"model", "cond"}, {"code", "INVALID_ARGUMENT"}}),
      1);
  EXPECT_EQ(testing::Sample(*metrics_->registry(), "tcm_requests_total", {{"model", "unknown"}, {"code", "NOT_FOUND"}}),
            1);
}

TEST_F(InferenceServiceTest, AFullQueueIsResourceExhausted) {
  queue_.RefuseWith(absl::ResourceExhaustedError("queue of model 'cond' is full"));
  grpc::ClientContext context;
  inference::ModelInferResponse response;
  const grpc::Status status = stub_->ModelInfer(&context, ClassRequest({1}, 1), &response);
  EXPECT_EQ(status.error_code(), StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(response.outputs_size(), 0);
}

TEST_F(InferenceServiceTest, ACancelledCallCancelsItsRequest) {
  grpc::ClientContext context;
  inference::ModelInferResponse response;
  grpc::Status status;
  std::thread caller([&] { status = stub_->ModelInfer(&context, ClassRequest({1, 2, 3}, 5), &response); });
  std::shared_ptr<RequestState> request = queue_.WaitForRequest(0);
  ASSERT_NE(request, nullptr);
  EXPECT_TRUE(request->Abandoned(absl::Now()).ok());
  context.TryCancel();
  // The service marks the request; the batcher then drops its images and fails it.
  const absl::Status abandoned = testing::WaitUntilAbandoned(*request);
  EXPECT_EQ(abandoned.code(), absl::StatusCode::kCancelled) << abandoned;
  request->Fail(abandoned);
  caller.join();
  EXPECT_EQ(status.error_code(), StatusCode::CANCELLED);
}

TEST_F(InferenceServiceTest, HealthAndMetadataFollowTheServer) {
  grpc::ClientContext c1;
  inference::ServerLiveResponse live;
  ASSERT_TRUE(stub_->ServerLive(&c1, {}, &live).ok());
  EXPECT_TRUE(live.live());

  inference::ServerReadyResponse ready;
  grpc::ClientContext c2;
  ASSERT_TRUE(stub_->ServerReady(&c2, {}, &ready).ok());
  EXPECT_TRUE(ready.ready());
  ready_ = false;
  grpc::ClientContext c3;
  ASSERT_TRUE(stub_->ServerReady(&c3, {}, &ready).ok());
  EXPECT_FALSE(ready.ready());

  inference::ModelReadyRequest model;
  model.set_name("uncond");
  inference::ModelReadyResponse model_ready;
  grpc::ClientContext c4;
  ASSERT_TRUE(stub_->ModelReady(&c4, model, &model_ready).ok());
  EXPECT_FALSE(model_ready.ready());
  model.set_name("nope");
  grpc::ClientContext c5;
  EXPECT_EQ(stub_->ModelReady(&c5, model, &model_ready).error_code(), StatusCode::NOT_FOUND);

  inference::ServerMetadataResponse server;
  grpc::ClientContext c6;
  ASSERT_TRUE(stub_->ServerMetadata(&c6, {}, &server).ok());
  EXPECT_EQ(server.name(), "tcm-serve");
  EXPECT_FALSE(server.version().empty());

  inference::ModelMetadataRequest metadata_request;
  metadata_request.set_name("cond");
  inference::ModelMetadataResponse metadata;
  grpc::ClientContext c7;
  ASSERT_TRUE(stub_->ModelMetadata(&c7, metadata_request, &metadata).ok());
  EXPECT_EQ(metadata.platform(), "tcm_libtorch");
  ASSERT_EQ(metadata.inputs_size(), 1);
  EXPECT_EQ(metadata.inputs(0).name(), "class_label");
  metadata_request.set_version("7");
  grpc::ClientContext c8;
  EXPECT_EQ(stub_->ModelMetadata(&c8, metadata_request, &metadata).error_code(), StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace tcm
