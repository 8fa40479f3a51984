// The worker pool with a real (tiny) model: a batch whose computation throws
// fails only its own requests with INTERNAL, and the worker serves on; a
// model's instance settings decide which workers run it.
#include "server/worker_pool.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/thread_priority.h"
#include "model/denoiser.h"
#include "model/model_config.h"
#include "server/metrics_test_util.h"

namespace tcm {
namespace {

// A 16x16 ten-class network named "tiny": EDM2's U-Net, or with `ddpmpp` a
// DDPM++ (SongUNet) of the same size.
ModelDirectory TinyModel(bool ddpmpp = false) {
  v1::ModelConfig c;
  c.set_architecture(ddpmpp ? "SongUNet" : "EDM2UNet");
  c.set_img_resolution(16);
  c.set_img_channels(1);
  c.set_num_classes(10);
  if (ddpmpp) {
    auto* song = c.mutable_song();
    song->set_model_channels(8);
    song->add_channel_mult(1);
    song->set_num_blocks(1);
  } else {
    auto* e = c.mutable_edm2();
    e->set_model_channels(8);
    e->add_channel_mult(1);
    e->set_num_blocks(1);
    e->clear_attn_resolutions();
  }
  ModelDirectory m;
  m.name = "tiny";
  m.config = *CompleteModelConfig(c);
  m.config.set_name("tiny");  // as the loader completes it
  torch::manual_seed(0);
  m.weights = (*Denoiser::Create(m.config))->StateDict();
  return m;
}

// Collects one call's outcome.
class RecordingSink : public ResponseSink {
 public:
  void OnAccepted(const std::shared_ptr<RequestState>&) override {}
  bool DeliversEachImage() const override { return false; }
  void OnImage(v1::Image) override { ++images; }
  void OnFinish(const absl::Status& status, const v1::Timings&) override { done.set_value(status); }
  std::atomic<int> images{0};
  std::promise<absl::Status> done;
};

class WorkerPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = TinyModel();
    const Batcher::ModelQueueOptions queue{"tiny", 8, absl::ZeroDuration(), 64};
    metrics_ =
        std::make_unique<ServerMetrics>(std::vector<ServedModel>{DescribeModel("tiny", model_.config, {}, queue)});
    Batcher::Options bo;
    bo.models.push_back({"tiny", /*max_batch_size=*/8, absl::ZeroDuration(), /*max_queue_size=*/64});
    batcher_ = *Batcher::Create(bo);
  }

  // Queues one request of `num_images` at `steps` through `pool`; its outcome
  // arrives in the sink.
  std::unique_ptr<RecordingSink> Submit(WorkerPool& pool, unsigned num_images, unsigned steps,
                                        absl::Time deadline = absl::InfiniteFuture()) {
    GenerationSpec spec;
    spec.model_name = "tiny";
    spec.num_images = num_images;
    spec.steps = steps;
    spec.class_labels.assign(num_images, 3);
    auto sink = std::make_unique<RecordingSink>();
    auto state = std::make_shared<RequestState>(spec, sink.get(), &metrics_->model(0), absl::Now(), deadline);
    EXPECT_TRUE(pool.Submit(state).ok());
    return sink;
  }

  // Waits for the request behind `sink` to end.
  static absl::Status Wait(RecordingSink& sink, int* images) {
    auto result = sink.done.get_future();
    EXPECT_EQ(result.wait_for(std::chrono::seconds(60)), std::future_status::ready);
    *images = sink.images;
    return result.get();
  }

  // Submits one request and waits for its end.
  absl::Status Generate(WorkerPool& pool, unsigned num_images, unsigned steps, int* images) {
    return Wait(*Submit(pool, num_images, steps), images);
  }

  // A pool of `workers` one-thread CPU workers over model_ and batcher_.
  absl::StatusOr<std::unique_ptr<WorkerPool>> MakePool(int workers, std::function<void(const Batch&)> before_batch = {},
                                                       int compute_nice = 0) {
    WorkerPool::Options options;
    options.cpu_workers = workers;
    options.intra_op_threads = 1;
    options.compute_nice = compute_nice;
    options.before_batch = std::move(before_batch);
    return WorkerPool::Create(options, {model_}, batcher_.get(), metrics_.get());
  }

  // A before_batch hook that counts batches in `batches` and throws on batch `n` (from 1).
  static std::function<void(const Batch&)> FailBatch(int n, std::atomic<int>* batches) {
    return [n, batches](const Batch&) {
      if (++*batches == n) throw std::runtime_error("injected fault");
    };
  }

  // Ends the test's traffic: the workers drain the queue and stop.
  void Stop(WorkerPool& pool) {
    batcher_->Close();
    pool.Join();
  }

  ModelDirectory model_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<Batcher> batcher_;
};

TEST_F(WorkerPoolTest, AFailingBatchFailsOnlyItsRequestsAndTheWorkerServesOn) {
  std::atomic<int> batches{0};
  // The second batch fails: the second step of the first request.
  auto pool = MakePool(1, FailBatch(2, &batches));
  ASSERT_TRUE(pool.ok()) << pool.status();
  (*pool)->Start();

  int images = 0;
  const absl::Status failed = Generate(**pool, 3, 2, &images);
  EXPECT_EQ(failed.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(failed.message(), "batch failed: injected fault");
  EXPECT_EQ(images, 0);

  for (unsigned steps : {1u, 2u}) {
    const absl::Status ok = Generate(**pool, 4, steps, &images);
    EXPECT_TRUE(ok.ok()) << ok;
    EXPECT_EQ(images, 4);
  }
  EXPECT_EQ(batches.load(), 5);  // 2 for the failed call, then 1 and 2: one worker did them all

  Stop(**pool);
}

TEST_F(WorkerPoolTest, AFailingBatchLeavesTheRequestsOfOtherBatchesAlone) {
  Batcher::Options one_per_batch;
  one_per_batch.models.push_back({"tiny", /*max_batch_size=*/1, absl::ZeroDuration(), /*max_queue_size=*/64});
  batcher_ = *Batcher::Create(one_per_batch);
  std::atomic<int> batches{0};
  auto pool = MakePool(1, FailBatch(1, &batches));
  ASSERT_TRUE(pool.ok()) << pool.status();
  // Both requests wait in the queue before any batch runs; the first batch
  // (the first request's image) fails.
  auto first = Submit(**pool, 1, 1);
  auto second = Submit(**pool, 2, 2);
  (*pool)->Start();
  int images = 0;
  EXPECT_EQ(Wait(*first, &images).code(), absl::StatusCode::kInternal);
  EXPECT_EQ(images, 0);
  const absl::Status ok = Wait(*second, &images);
  EXPECT_TRUE(ok.ok()) << ok;
  EXPECT_EQ(images, 2);
  EXPECT_EQ(batches.load(), 5);  // the failed one, then two images at two steps
  Stop(**pool);
}

// Warm-up times passes of one image and of a full batch for the batcher; a
// call that cannot finish by its deadline at the estimated pass time is
// dropped before any compute, counted as deadline_unmeetable.
TEST_F(WorkerPoolTest, WarmUpFeedsThePassTimeEstimateAndUnmeetableCallsCostNoCompute) {
  std::atomic<int> batches{0};
  auto pool = MakePool(1, [&batches](const Batch&) { ++batches; });
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ(batcher_->EstimatedPassTime(0, 8), absl::ZeroDuration());
  ASSERT_TRUE((*pool)->WarmUp(1).ok());
  EXPECT_GT(batcher_->EstimatedPassTime(0, 1), absl::ZeroDuration());
  EXPECT_GT(batcher_->EstimatedPassTime(0, 8), absl::ZeroDuration());
  // Passes of an hour, whatever this machine's speed: a call due in a minute cannot be met.
  for (int i = 0; i < 20; ++i)
    for (size_t size : {1, 8}) batcher_->ObservePass(0, size, absl::Hours(1));
  (*pool)->Start();
  int images = 0;
  const absl::Status late = Wait(*Submit(**pool, 3, 2, absl::Now() + absl::Minutes(1)), &images);
  EXPECT_EQ(late.code(), absl::StatusCode::kDeadlineExceeded) << late;
  EXPECT_NE(late.message().find("cannot be met"), absl::string_view::npos) << late;
  EXPECT_EQ(images, 0);
  EXPECT_EQ(batches.load(), 0);
  // A call without a deadline still runs.
  EXPECT_TRUE(Generate(**pool, 2, 1, &images).ok());
  EXPECT_EQ(images, 2);
  Stop(**pool);  // the call ends at its first drop; after Join every image is counted
  EXPECT_EQ(batches.load(), 1);
  EXPECT_EQ(testing::Sample(*metrics_->registry(), "tcm_images_dropped_total",
                            {{"model", "tiny"}, {"reason", "deadline_unmeetable"}}),
            3);
}

TEST_F(WorkerPoolTest, WorkersComputeAtTheirNiceAndTheRestOfTheProcessKeepsItsOwn) {
  const int mine = ThisThreadNice();
  std::atomic<int> worker_nice{-100};
  auto pool = MakePool(
      1, [&worker_nice](const Batch&) { worker_nice = ThisThreadNice(); }, /*compute_nice=*/5);
  ASSERT_TRUE(pool.ok()) << pool.status();
  (*pool)->Start();
  int images = 0;
  EXPECT_TRUE(Generate(**pool, 2, 1, &images).ok());
  EXPECT_EQ(worker_nice.load(), std::min(mine + 5, 19));
  EXPECT_EQ(ThisThreadNice(), mine);
  Stop(**pool);
}

// The nice value of every thread of this process, from /proc/self/task.
std::vector<int> ThreadNices() {
  std::vector<int> nices;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream in(task.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // Fields after the ")" that ends the thread's name: state is field 3, nice field 19.
    std::istringstream fields(stat.substr(stat.rfind(')') + 2));
    std::string field;
    for (int i = 3; i <= 19 && fields >> field; ++i) {
    }
    nices.push_back(std::stoi(field));
  }
  return nices;
}

// LibTorch's intra-op (OpenMP) threads are created by the worker after it
// took its nice value, and inherit it. (A parallel region inside LibTorch:
// the project itself is not compiled with OpenMP.)
TEST_F(WorkerPoolTest, TheIntraOpThreadsInheritTheWorkersNice) {
  const int mine = ThisThreadNice();
  const int niced = std::min(mine + 5, 19);
  ASSERT_NE(niced, mine) << "this test needs a nice value below 19";
  std::atomic<int> niced_threads{0};
  WorkerPool::Options options;
  options.cpu_workers = 1;
  options.intra_op_threads = 2;
  options.compute_nice = 5;
  options.before_batch = [&](const Batch&) {
    torch::Tensor big = torch::ones({1 << 22});
    big.mul_(2);  // large enough for LibTorch to split over its 2 threads
    int count = 0;
    for (int nice : ThreadNices()) count += nice == niced;
    niced_threads = count;
  };
  auto pool = WorkerPool::Create(options, {model_}, batcher_.get(), metrics_.get());
  ASSERT_TRUE(pool.ok()) << pool.status();
  (*pool)->Start();
  int images = 0;
  EXPECT_TRUE(Generate(**pool, 2, 1, &images).ok());
  Stop(**pool);
  EXPECT_GE(niced_threads.load(), 2) << "the worker and its intra-op thread";
  EXPECT_EQ(ThisThreadNice(), mine);
}

TEST_F(WorkerPoolTest, InstanceCountLimitsTheWorkersThatRunAModel) {
  model_.config.mutable_instance()->set_count(1);
  auto pool = MakePool(2);
  ASSERT_TRUE(pool.ok()) << pool.status();
  (*pool)->Start();
  // Requests in flight together, so that an idle second worker would take some.
  std::vector<std::unique_ptr<RecordingSink>> sinks;
  for (int i = 0; i < 6; ++i) sinks.push_back(Submit(**pool, 8, 2));
  for (auto& sink : sinks) {
    int images = 0;
    EXPECT_TRUE(Wait(*sink, &images).ok());
    EXPECT_EQ(images, 8);
  }
  EXPECT_GT(metrics_->worker_busy(0).Value(), 0.0);
  EXPECT_EQ(metrics_->worker_busy(1).Value(), 0.0) << "worker 1 does not hold the model";
  Stop(**pool);
}

TEST_F(WorkerPoolTest, AModelRemovedOnceIdleFreesItsBatcherQueueAndTheOthersServeOn) {
  auto pool = MakePool(1);
  ASSERT_TRUE(pool.ok()) << pool.status();
  (*pool)->Start();
  const Batcher::ModelQueueOptions queue{"tiny", 8, absl::ZeroDuration(), 64};
  auto added = (*pool)->AddModel(model_, queue, /*warmup_batch_size=*/1);
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_EQ(*added, 1);
  EXPECT_EQ(batcher_->ModelsHeld(), 2u);
  batcher_->RetireModel(*added);
  ASSERT_TRUE(batcher_->ModelIdle(*added));
  (*pool)->RemoveModel(*added);
  EXPECT_EQ(batcher_->ModelsHeld(), 1u);
  int images = 0;
  EXPECT_TRUE(Generate(**pool, 2, 2, &images).ok());
  EXPECT_EQ(images, 2);
  Stop(**pool);
}

TEST_F(WorkerPoolTest, AModelWhoseOutputIsNotFiniteFailsItsWarmUpNamingIt) {
  // Weights that make NaN: the model would serve garbage images.
  ModelDirectory nan = model_;
  nan.name = "nan-model";
  nan.config.set_name("nan-model");
  for (auto& [key, tensor] : nan.weights) tensor = torch::full_like(tensor, std::nan(""));
  const Batcher::ModelQueueOptions queue{"nan-model", 8, absl::ZeroDuration(), 64};

  // Loaded while serving: refused, and nothing of it stays in the batcher.
  auto pool = MakePool(1);
  ASSERT_TRUE(pool.ok()) << pool.status();
  (*pool)->Start();
  auto added = (*pool)->AddModel(nan, queue, /*warmup_batch_size=*/2);
  EXPECT_FALSE(added.ok());
  EXPECT_EQ(added.status().code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(absl::StartsWith(added.status().message(), "warm-up of 'nan-model' failed: ")) << added.status();
  EXPECT_TRUE(absl::StrContains(added.status().message(),
                                "output values of a first-step pass of 2 image(s) are not "
                                "finite (NaN or infinite)"))
      << added.status();
  EXPECT_EQ(batcher_->ModelsHeld(), 1u);
  int images = 0;
  EXPECT_TRUE(Generate(**pool, 1, 1, &images).ok()) << "the model served before serves on";
  EXPECT_EQ(images, 1);
  Stop(**pool);   // (also where the check above failed: the workers must end)
  pool->reset();  // before its batcher goes

  // At start: the pool's warm-up fails (the server does not start).
  model_ = nan;
  Batcher::Options bo;
  bo.models.push_back(queue);
  batcher_ = *Batcher::Create(bo);
  auto at_start = MakePool(1);
  ASSERT_TRUE(at_start.ok()) << at_start.status();
  const absl::Status refused = (*at_start)->WarmUp(/*batch_size=*/1);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StartsWith(refused.message(), "warm-up of 'nan-model' failed: ")) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "a first-step pass of 1 image(s) are not finite")) << refused;
}

TEST_F(WorkerPoolTest, AnOutputThatIsNotFiniteFailsItsCallInsteadOfBeingServed) {
  // A DDPM++ network (no activation clamps) whose label map holds a huge but
  // finite weight for class 3 (the loader accepts it): class 3's embedding
  // overflows to infinity and its images to NaN, while warm-up (class 0) passes.
  model_ = TinyModel(/*ddpmpp=*/true);
  bool changed = false;
  for (auto& [key, tensor] : model_.weights)
    if (absl::EndsWith(key, "map_label.weight")) {
      tensor = tensor.clone();
      tensor.select(1, 3).fill_(3e38f);
      changed = true;
    }
  ASSERT_TRUE(changed) << "no map_label.weight in the network";
  auto pool = MakePool(1);
  ASSERT_TRUE(pool.ok()) << pool.status();
  ASSERT_TRUE((*pool)->WarmUp(1).ok());
  (*pool)->Start();
  int images = 0;
  const absl::Status failed = Generate(**pool, 2, 1, &images);  // two images of class 3
  EXPECT_EQ(failed.code(), absl::StatusCode::kInternal) << failed;
  EXPECT_TRUE(absl::StrContains(failed.message(),
                                "model 'tiny' computed output values that are not finite (NaN or infinite) for image "))
      << failed;
  EXPECT_TRUE(absl::StrContains(failed.message(), "(class 3) at step 1 of 1")) << failed;
  EXPECT_EQ(images, 0);
  Stop(**pool);  // after Join every image is counted
  EXPECT_EQ(
      testing::Sample(*metrics_->registry(), "tcm_images_dropped_total", {{"model", "tiny"}, {"reason", "failed"}}), 2);
}

TEST_F(WorkerPoolTest, InstanceSettingsTheServerCannotMeetAreRefused) {
  model_.config.mutable_instance()->set_count(3);
  auto too_many = MakePool(2);
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.status().message(),
            "model 'tiny': instance.count is 3 but the server has 2 CPU worker(s) (--workers)");
  model_.config.mutable_instance()->set_count(0);
  model_.config.mutable_instance()->set_kind(v1::InstanceConfig::KIND_GPU);
  auto gpu = MakePool(2);
  ASSERT_FALSE(gpu.ok());
  EXPECT_EQ(gpu.status().message(), "model 'tiny': instance.kind is KIND_GPU but the server runs on cpu (--device)");
}

}  // namespace
}  // namespace tcm
