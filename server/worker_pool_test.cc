// The worker pool with a real (tiny) model: a batch whose computation throws
// fails only its own requests with INTERNAL, and the worker serves on.
#include "server/worker_pool.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <future>

#include "model/denoiser.h"
#include "model/model_config.h"

namespace tcm {
namespace {

ModelDirectory TinyModel() {
  v1::ModelConfig c;
  c.set_architecture("EDM2UNet");
  c.set_img_resolution(16);
  c.set_img_channels(1);
  c.set_num_classes(10);
  auto* e = c.mutable_edm2();
  e->set_model_channels(8);
  e->add_channel_mult(1);
  e->set_num_blocks(1);
  e->clear_attn_resolutions();
  ModelDirectory m;
  m.name = "tiny";
  m.config = *CompleteModelConfig(c);
  torch::manual_seed(0);
  m.weights = (*Denoiser::Create(m.config))->StateDict();
  return m;
}

// Collects one call's outcome.
class RecordingSink : public ResponseSink {
 public:
  void OnAccepted(const std::shared_ptr<RequestState>&) override {}
  void OnImage(v1::Image) override { ++images; }
  void OnFinish(const absl::Status& status, const v1::Timings&) override { done.set_value(status); }
  std::atomic<int> images{0};
  std::promise<absl::Status> done;
};

class WorkerPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = TinyModel();
    metrics_ = std::make_unique<ServerMetrics>(std::vector<ModelLabels>{{"tiny", "EDM2UNet", 16, 1, 10, 1}});
    Batcher::Options bo;
    bo.models.push_back({"tiny", /*max_batch_size=*/8, absl::ZeroDuration(), /*max_queue_size=*/64});
    batcher_ = *Batcher::Create(bo);
  }

  // Submits one request of `num_images` at `steps` and waits for its end.
  absl::Status Generate(unsigned num_images, unsigned steps, int* images) {
    GenerationSpec spec;
    spec.model_name = "tiny";
    spec.num_images = num_images;
    spec.steps = steps;
    spec.class_labels.assign(num_images, 3);
    RecordingSink sink;
    auto state = std::make_shared<RequestState>(spec, &sink, &metrics_->model(0), absl::Now(), absl::InfiniteFuture());
    std::vector<std::unique_ptr<ImageTask>> tasks;
    for (unsigned i = 0; i < num_images; ++i) tasks.push_back(MakeGenerationTask(state, i, &metrics_->model(0)));
    EXPECT_TRUE(batcher_->Submit(0, std::move(tasks)).ok());
    auto result = sink.done.get_future();
    EXPECT_EQ(result.wait_for(std::chrono::seconds(60)), std::future_status::ready);
    *images = sink.images;
    return result.get();
  }

  ModelDirectory model_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<Batcher> batcher_;
};

TEST_F(WorkerPoolTest, AFailingBatchFailsOnlyItsRequestsAndTheWorkerServesOn) {
  std::atomic<int> batches{0};
  WorkerPool::Options options;
  options.cpu_workers = 1;
  options.intra_op_threads = 1;
  // The second batch fails: the second step of the first request.
  options.before_batch = [&](const Batch&) {
    if (++batches == 2) throw std::runtime_error("injected fault");
  };
  auto pool = WorkerPool::Create(options, {model_}, batcher_.get(), metrics_.get());
  ASSERT_TRUE(pool.ok()) << pool.status();
  (*pool)->Start();

  int images = 0;
  const absl::Status failed = Generate(3, 2, &images);
  EXPECT_EQ(failed.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(failed.message(), "batch failed: injected fault");
  EXPECT_EQ(images, 0);

  for (unsigned steps : {1u, 2u}) {
    const absl::Status ok = Generate(4, steps, &images);
    EXPECT_TRUE(ok.ok()) << ok;
    EXPECT_EQ(images, 4);
  }
  EXPECT_EQ(batches.load(), 5);  // 2 for the failed call, then 1 and 2: one worker did them all

  batcher_->Close();
  (*pool)->Join();
}

}  // namespace
}  // namespace tcm
