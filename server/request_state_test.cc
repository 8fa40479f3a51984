// RequestState under concurrency: images finished, dropped and cancelled from
// many threads at once end the call exactly once, and every image is counted
// once as generated or dropped. `make test-sanitize` runs it under
// ThreadSanitizer.
#include "server/request_state.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "server/metrics.h"
#include "server/metrics_test_util.h"

namespace tcm {
namespace {

// Records what a call's sink is told; fails the test on a second OnFinish or
// on anything after it.
class CheckingSink : public ResponseSink {
 public:
  explicit CheckingSink(bool streams) : streams_(streams) {}
  void OnAccepted(const std::shared_ptr<RequestState>&) override {}
  bool DeliversEachImage() const override { return streams_; }
  void OnImage(v1::Image) override {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_EQ(finishes_, 0) << "an image after the call finished";
    ++images_;
  }
  void OnFinish(const absl::Status& status, const v1::Timings&) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++finishes_;
    status_ = status;
  }
  int finishes() {
    std::lock_guard<std::mutex> lock(mu_);
    return finishes_;
  }
  absl::Status status() {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }

 private:
  const bool streams_;
  std::mutex mu_;
  int images_ = 0;
  int finishes_ = 0;
  absl::Status status_;
};

class RequestStateTest : public ::testing::TestWithParam<bool> {
 protected:
  RequestStateTest() {
    ServedModel m;
    m.name = "m";
    m.precision = "fp32";
    metrics_ = std::make_unique<ServerMetrics>(std::vector<ServedModel>{m});
  }

  double Sum(const std::string& name) {
    return testing::Sample(*metrics_->registry(), name, {{"model", "m"}}, /*sum=*/true).value_or(0);
  }

  std::unique_ptr<ServerMetrics> metrics_;
};

GenerationSpec Spec(unsigned images) {
  GenerationSpec spec;
  spec.model_name = "m";
  spec.num_images = images;
  spec.steps = 1;
  spec.format = v1::IMAGE_FORMAT_RAW;
  spec.class_labels.assign(images, -1);
  return spec;
}

// Calls with 32 images each: 4 threads report the images as the workers and
// the batcher do (dropped once the call is abandoned, else finished) while, in
// some calls, one image is dropped for its deadline, or another thread cancels
// the call. Whatever the interleaving, each call finishes once, and each image
// is counted once as generated or dropped.
TEST_P(RequestStateTest, ConcurrentImagesDropsAndCancelsFinishOnceAndBalance) {
  const bool streams = GetParam();
  constexpr unsigned kImages = 32, kWorkers = 4;
  constexpr int kCalls = 90;
  std::mt19937 rng(7);
  const std::vector<uint8_t> pixels(2 * 2, 9);
  int ok_calls = 0;
  for (int call = 0; call < kCalls; ++call) {
    CheckingSink sink(streams);
    auto state =
        std::make_shared<RequestState>(Spec(kImages), &sink, &metrics_->model(0), absl::Now(), absl::InfiniteFuture());
    state->Queued();
    const bool drop = call % 3 == 1, cancel = call % 3 == 2;
    const unsigned dropped_index = rng() % kImages;
    std::vector<std::thread> threads;
    for (unsigned w = 0; w < kWorkers; ++w) {
      threads.emplace_back([&, w] {
        for (unsigned i = w; i < kImages; i += kWorkers) {
          if (drop && i == dropped_index) {
            state->DropImage(absl::DeadlineExceededError("the call's deadline passed while it was queued"));
          } else if (absl::Status why = state->Abandoned(absl::Now()); !why.ok()) {
            state->DropImage(why);
          } else {
            state->ImageDone(i, pixels.data(), 2, 2, 1);
          }
        }
      });
    }
    if (cancel) threads.emplace_back([&] { state->Cancel(); });
    for (auto& t : threads) t.join();
    EXPECT_EQ(sink.finishes(), 1) << "call " << call;
    if (sink.status().ok()) ++ok_calls;
    if (drop) EXPECT_EQ(sink.status().code(), absl::StatusCode::kDeadlineExceeded);
    if (cancel && !sink.status().ok()) EXPECT_EQ(sink.status().code(), absl::StatusCode::kCancelled);
  }
  EXPECT_GE(ok_calls, kCalls / 3) << "the calls nobody disturbed";
  EXPECT_EQ(Sum("tcm_images_accepted_total"), kCalls * kImages);
  EXPECT_EQ(Sum("tcm_images_generated_total") + Sum("tcm_images_dropped_total"), kCalls * kImages);
  if (!streams)  // a failed unary call returns none of its images
    EXPECT_GE(Sum("tcm_images_dropped_total"), kCalls / 3 * kImages);
  EXPECT_EQ(Sum("tcm_requests_in_flight"), 0);
}

INSTANTIATE_TEST_SUITE_P(UnaryAndStream, RequestStateTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) { return info.param ? "Stream" : "Unary"; });

}  // namespace
}  // namespace tcm
