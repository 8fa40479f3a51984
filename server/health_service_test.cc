#include "server/health_service.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>

namespace tcm {
namespace {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// The service alone on a loopback port, with a client stub.
class HealthServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    health_ = std::make_unique<HealthService>(std::vector<std::string>{"model-a", "model-b"});
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(health_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ =
        Health::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    health_->Shutdown();
    server_->Shutdown();
  }

  // Check(name): the status, or the call's error code as a negative number.
  int Check(const std::string& name) {
    grpc::ClientContext context;
    HealthCheckRequest request;
    request.set_service(name);
    HealthCheckResponse response;
    const grpc::Status status = stub_->Check(&context, request, &response);
    return status.ok() ? response.status() : -status.error_code();
  }

  std::unique_ptr<grpc::ClientReader<HealthCheckResponse>> Watch(grpc::ClientContext* context,
                                                                 const std::string& name) {
    HealthCheckRequest request;
    request.set_service(name);
    return stub_->Watch(context, request);
  }

  std::unique_ptr<HealthService> health_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Health::Stub> stub_;
};

TEST_F(HealthServiceTest, EveryNameStartsNotServingAndFollowsTheServer) {
  for (const char* name : {"", "model-a", "model-b"}) EXPECT_EQ(Check(name), HealthCheckResponse::NOT_SERVING) << name;
  health_->SetServing(true);
  for (const char* name : {"", "model-a", "model-b"}) EXPECT_EQ(Check(name), HealthCheckResponse::SERVING) << name;
  health_->SetServing(false);
  for (const char* name : {"", "model-a", "model-b"}) EXPECT_EQ(Check(name), HealthCheckResponse::NOT_SERVING) << name;
}

TEST_F(HealthServiceTest, CheckOfAnUnknownNameIsNotFound) { EXPECT_EQ(Check("model-c"), -grpc::StatusCode::NOT_FOUND); }

TEST_F(HealthServiceTest, WatchSendsTheCurrentStatusThenEachChangeAndEndsAtShutdown) {
  grpc::ClientContext context;
  auto reader = Watch(&context, "model-a");
  HealthCheckResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
  health_->SetServing(true);
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);
  health_->SetServing(false);
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
  health_->Shutdown();
  EXPECT_FALSE(reader->Read(&response));
  EXPECT_TRUE(reader->Finish().ok());
}

TEST_F(HealthServiceTest, WatchOfAnUnknownNameSendsServiceUnknownOnly) {
  grpc::ClientContext context;
  auto reader = Watch(&context, "model-c");
  HealthCheckResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVICE_UNKNOWN);
  health_->SetServing(true);  // not its business
  health_->Shutdown();
  EXPECT_FALSE(reader->Read(&response));
  EXPECT_TRUE(reader->Finish().ok());
}

TEST_F(HealthServiceTest, AModelLoadedOrUnloadedWhileServingIsFollowedByCheckAndWatch) {
  health_->SetServing(true);
  grpc::ClientContext context;
  auto reader = Watch(&context, "model-c");  // not served yet
  HealthCheckResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVICE_UNKNOWN);
  health_->SetModelServing("model-c", true);  // loaded
  EXPECT_EQ(Check("model-c"), HealthCheckResponse::SERVING);
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);
  health_->SetModelServing("model-c", false);  // unloaded
  EXPECT_EQ(Check("model-c"), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(Check("model-a"), HealthCheckResponse::SERVING);  // the others stay as they are
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
  health_->Shutdown();
  EXPECT_FALSE(reader->Read(&response));
  EXPECT_TRUE(reader->Finish().ok());
}

TEST_F(HealthServiceTest, WatchOpenedAfterShutdownSendsItsStatusAndEnds) {
  health_->SetServing(true);
  health_->Shutdown();
  grpc::ClientContext context;
  auto reader = Watch(&context, "");
  HealthCheckResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);
  EXPECT_FALSE(reader->Read(&response));
  EXPECT_TRUE(reader->Finish().ok());
}

TEST_F(HealthServiceTest, ACancelledWatchEndsCancelled) {
  grpc::ClientContext context;
  auto reader = Watch(&context, "model-b");
  HealthCheckResponse response;
  ASSERT_TRUE(reader->Read(&response));
  context.TryCancel();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The service goes on for other callers.
  health_->SetServing(true);
  EXPECT_EQ(Check("model-b"), HealthCheckResponse::SERVING);
}

}  // namespace
}  // namespace tcm
