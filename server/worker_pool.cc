#include "server/worker_pool.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/thread_priority.h"
#include "model/cpu_threads.h"
#include "model/sampler.h"
#include "model/torch_error.h"
#include "server/device.h"

namespace tcm {
namespace {

// The batcher's unit of work: one image of a request at one sampling step.
class GenerationTask : public ImageTask {
 public:
  GenerationTask(std::shared_ptr<RequestState> request, unsigned index) : request(std::move(request)), index(index) {
    kind = static_cast<int>(this->request->spec().steps);  // 1- and 2-step requests are the batcher's kinds
    steps_left = kind;
    deadline = this->request->deadline();
    priority = static_cast<int>(this->request->spec().priority);
  }

  absl::Status Abandoned(absl::Time now) const override { return request->Abandoned(now); }

  void Drop(const absl::Status& why, DropCause cause) override {
    request->DropImage(why, cause == DropCause::kDeadlineUnmeetable ? "deadline_unmeetable" : "");
  }

  std::shared_ptr<RequestState> request;
  unsigned index;
  int step = 0;
  torch::Tensor previous;  // output of the last step, [C, H, W] on the CPU
};

}  // namespace

class WorkerPool::Worker {
 public:
  Worker(int id, DeviceContext device, int threads, int nice, Batcher* batcher, ServerMetrics* metrics,
         std::function<void(const Batch&)> before_batch)
      : id_(id),
        device_(std::move(device)),
        threads_(threads),
        nice_(nice),
        batcher_(batcher),
        metrics_(metrics),
        before_batch_(std::move(before_batch)) {}

  // Serves `model` (the next model index) on this worker, or skips it.
  absl::Status AddReplica(const ModelDirectory& model, bool serve) {
    if (!serve) {
      replicas_.push_back(nullptr);
      return absl::OkStatus();
    }
    auto replica = BuildReplica(model);
    if (!replica.ok()) return replica.status();
    try {
      device_.Adopt(**replica, model.config);
    } catch (const std::exception& e) {
      return absl::InternalError(
          absl::StrCat("moving '", model.name, "' to ", device_.name(), ": ", ExceptionMessage(e)));
    }
    replicas_.push_back(*replica);
    return absl::OkStatus();
  }

  // Per served model: a pass of `batch_size` images and one of each size the
  // device asks for (CUDA graph buckets), then timed passes of one image and
  // of a full batch for the batcher's pass-time estimate (each after an
  // untimed first pass of its size, which pays one-off set-up).
  absl::Status WarmUp(int batch_size) {
    ConfigureThisThread();
    for (size_t model = 0; model < replicas_.size(); ++model) {
      if (replicas_[model] == nullptr) continue;
      Denoiser& replica = *replicas_[model];
      // Full batches timed up to the default size; the estimate scales larger ones.
      const int full =
          static_cast<int>(std::min<size_t>(batcher_->MaxBatchSize(static_cast<int>(model)), kDefaultMaxBatchSize));
      try {
        WarmUpPass(replica, batch_size);
        for (int size : device_.WarmUpSizes(batcher_->MaxBatchSize(static_cast<int>(model)))) WarmUpPass(replica, size);
        for (int size : {1, full}) {
          if (size != batch_size) WarmUpPass(replica, size);
          const absl::Time start = absl::Now();
          WarmUpPass(replica, size);
          batcher_->ObservePass(static_cast<int>(model), size, absl::Now() - start);
        }
      } catch (const std::exception& e) {
        return absl::InternalError(
            absl::StrCat("warm-up of '", replica.config().name(), "' failed: ", ExceptionMessage(e)));
      }
    }
    return absl::OkStatus();
  }

  void Run() {
    // Before the first parallel region, so that the OpenMP team inherits it.
    if (absl::Status nice = LowerThisThreadPriority(nice_); !nice.ok())
      std::fprintf(stderr, "tcm-server: worker %d keeps its priority: %s\n", id_, nice.ToString().c_str());
    ConfigureThisThread();
    Batcher::ModelSet serves;
    for (const auto& replica : replicas_) serves.push_back(replica != nullptr);
    while (std::unique_ptr<Batch> batch = batcher_->NextBatch(serves)) {
      const absl::Time start = absl::Now();
      RunBatch(*batch);
      batcher_->BatchDone();
      metrics_->worker_busy(id_).Increment(absl::ToDoubleSeconds(absl::Now() - start));
    }
  }

 private:
  void ConfigureThisThread() {
    // LibTorch's thread count is per thread (OpenMP): set it in every worker.
    ConfigureCpuThreads(threads_);
    device_.BindThisThread();
  }

  // One first-step pass of `n` images of class 0. Throws what the network throws.
  void WarmUpPass(Denoiser& replica, int n) {
    const auto& c = replica.config();
    std::vector<torch::Tensor> inputs;
    for (int i = 0; i < n; ++i) inputs.push_back(StepInput(c, 0, i, 0, {}));
    torch::Tensor labels = c.num_classes() ? torch::zeros({n}, torch::kInt64) : torch::Tensor();
    Forward(replica, torch::stack(inputs), torch::full({n}, StepSigma(c, 0)), labels);
  }

  torch::Tensor Forward(Denoiser& replica, const torch::Tensor& x, const torch::Tensor& sigma,
                        const torch::Tensor& labels) {
    torch::InferenceMode inference;
    return device_.Run(replica, x, sigma, labels);
  }

  void RunBatch(Batch& batch) {
    Denoiser& replica = *replicas_.at(batch.model);
    const auto& config = replica.config();
    ModelMetrics& metrics = metrics_->model(batch.model);
    const absl::Time start = absl::Now();
    const int n = static_cast<int>(batch.tasks.size());
    torch::Tensor out;
    absl::Time pass_start = start;  // after the test hook: what the batcher's pass-time estimate learns from
    try {
      if (before_batch_) before_batch_(batch);
      pass_start = absl::Now();
      std::vector<torch::Tensor> inputs;
      std::vector<float> sigmas;
      std::vector<int64_t> labels;
      for (auto& t : batch.tasks) {
        auto& task = static_cast<GenerationTask&>(*t);
        if (task.step == 0) {
          const double waited = absl::ToDoubleSeconds(start - task.arrival);
          metrics.QueueWait(task.priority, waited);
          task.request->AddQueueWait(waited);
        }
        const auto& spec = task.request->spec();
        inputs.push_back(StepInput(config, spec.seed, task.index, task.step, task.previous));
        sigmas.push_back(static_cast<float>(StepSigma(config, task.step)));
        labels.push_back(spec.class_labels.at(task.index));
      }
      torch::Tensor label_tensor = config.num_classes() ? torch::tensor(labels, torch::kInt64) : torch::Tensor();
      out = Forward(replica, torch::stack(inputs), torch::tensor(sigmas), label_tensor);
    } catch (const std::exception& e) {
      const absl::Status status = absl::InternalError(absl::StrCat("batch failed: ", ExceptionMessage(e)));
      for (auto& t : batch.tasks) static_cast<GenerationTask&>(*t).request->DropImage(status);
      metrics.Batch(n, absl::ToDoubleSeconds(absl::Now() - start));
      return;
    }
    const absl::Time end = absl::Now();
    const double compute = absl::ToDoubleSeconds(end - start);
    metrics.Batch(n, compute);
    batcher_->ObservePass(batch.model, n, end - pass_start);

    torch::Tensor pixels = ToPixels(out);  // [N, H, W, C] uint8
    std::set<RequestState*> served;        // each request is charged the batch once
    for (int i = 0; i < n; ++i) {
      auto task = std::unique_ptr<GenerationTask>(static_cast<GenerationTask*>(batch.tasks[i].release()));
      if (served.insert(task->request.get()).second) task->request->AddCompute(compute);
      if (task->step + 1 < static_cast<int>(task->request->spec().steps)) {
        if (task->request->spec().preview) {  // the first step's result is the 1-step image
          const torch::Tensor p = pixels[i];
          task->request->PreviewDone(task->index, p.data_ptr<uint8_t>(), p.size(1), p.size(0), p.size(2));
        }
        task->previous = out[i].clone();
        ++task->step;
        --task->steps_left;
        batcher_->Resubmit(batch.model, std::move(task));
      } else {
        const torch::Tensor p = pixels[i];
        task->request->ImageDone(task->index, p.data_ptr<uint8_t>(), p.size(1), p.size(0), p.size(2));
      }
    }
  }

  const int id_;
  DeviceContext device_;
  const int threads_;
  const int nice_;
  Batcher* const batcher_;
  ServerMetrics* const metrics_;
  const std::function<void(const Batch&)> before_batch_;
  std::vector<std::shared_ptr<Denoiser>> replicas_;  // by model index; null where not served
};

namespace {

// The workers that run `model`: its config's instance count (0 = all); on
// GPUs a count per GPU, and as workers go round the GPUs the first count x
// `gpus` are `count` on each. Its instance kind must match the device.
absl::StatusOr<int> InstanceCount(const ModelDirectory& model, WorkerPool::Options::Device device, int workers,
                                  int gpus) {
  const auto& instance = model.config.instance();
  const bool cuda = device == WorkerPool::Options::Device::kCuda;
  if ((instance.kind() == v1::InstanceConfig::KIND_GPU && !cuda) ||
      (instance.kind() == v1::InstanceConfig::KIND_CPU && cuda))
    return absl::InvalidArgumentError(absl::StrCat("model '", model.name, "': instance.kind is ",
                                                   v1::InstanceConfig::Kind_Name(instance.kind()),
                                                   " but the server runs on ", cuda ? "cuda" : "cpu", " (--device)"));
  if (instance.count() == 0) return workers;
  if (cuda) return static_cast<int>(instance.count()) * gpus;
  if (static_cast<int>(instance.count()) > workers)
    return absl::InvalidArgumentError(absl::StrCat("model '", model.name, "': instance.count is ", instance.count(),
                                                   " but the server has ", workers, " CPU worker(s) (--workers)"));
  return static_cast<int>(instance.count());
}

}  // namespace

absl::StatusOr<std::unique_ptr<WorkerPool>> WorkerPool::Create(const Options& options,
                                                               const std::vector<ModelDirectory>& models,
                                                               Batcher* batcher, ServerMetrics* metrics) {
  std::unique_ptr<WorkerPool> pool(new WorkerPool(batcher, metrics));
  std::vector<DeviceContext> devices;
  int gpus = 0;
  if (options.device == Options::Device::kCuda) {
    int per_gpu = 1;  // workers per GPU: the largest instance.count of any model
    for (const auto& model : models) per_gpu = std::max(per_gpu, static_cast<int>(model.config.instance().count()));
    auto cuda = CudaDevices(per_gpu);
    if (!cuda.ok()) return cuda.status();
    devices = std::move(*cuda);
    gpus = static_cast<int>(devices.size()) / per_gpu;
  } else {
    if (options.cpu_workers < 1) return absl::InvalidArgumentError("--workers: must be at least 1");
    for (int i = 0; i < options.cpu_workers; ++i) devices.push_back(DeviceContext::Cpu());
  }
  const int threads = options.intra_op_threads > 0 ? options.intra_op_threads
                                                   : std::max(1, AvailableCores() / static_cast<int>(devices.size()));
  std::vector<int> counts;
  for (const auto& model : models) {
    auto count = InstanceCount(model, options.device, static_cast<int>(devices.size()), gpus);
    if (!count.ok()) return count.status();
    counts.push_back(*count);
  }
  std::function<void(const Batch&)> before_batch = options.before_batch;
  if (!options.batch_gate_file.empty()) {
    std::fprintf(stderr, "tcm-server: TCM_TEST_BATCH_GATE is set: batches wait while %s exists\n",
                 options.batch_gate_file.c_str());
    before_batch = [gate = options.batch_gate_file, then = options.before_batch](const Batch& batch) {
      std::error_code ec;
      while (std::filesystem::exists(gate, ec)) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      if (then) then(batch);
    };
  }
  for (size_t i = 0; i < devices.size(); ++i) {
    auto worker = std::make_unique<Worker>(static_cast<int>(i), std::move(devices[i]), threads, options.compute_nice,
                                           batcher, metrics, before_batch);
    for (size_t m = 0; m < models.size(); ++m) {
      absl::Status status = worker->AddReplica(models[m], static_cast<int>(i) < counts[m]);
      if (!status.ok()) return status;
    }
    pool->workers_.push_back(std::move(worker));
  }
  return pool;
}

WorkerPool::WorkerPool(Batcher* batcher, ServerMetrics* metrics) : batcher_(batcher), metrics_(metrics) {}

absl::Status WorkerPool::Submit(const std::shared_ptr<RequestState>& request) {
  const int model = request->spec().model;
  std::vector<std::unique_ptr<ImageTask>> tasks;
  for (unsigned i : request->indices_to_compute()) tasks.push_back(std::make_unique<GenerationTask>(request, i));
  return batcher_->Submit(model, std::move(tasks), [&request] { request->Queued(); });
}

absl::Status WorkerPool::WarmUp(int batch_size) {
  // Each worker warms up on its own thread: thread settings and kernels are per thread.
  std::vector<absl::Status> results(workers_.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < workers_.size(); ++i)
    threads.emplace_back([&, i] { results[i] = workers_[i]->WarmUp(batch_size); });
  for (auto& t : threads) t.join();
  for (const auto& s : results)
    if (!s.ok()) return s;
  return absl::OkStatus();
}

void WorkerPool::Start() {
  for (auto& w : workers_) threads_.emplace_back([worker = w.get()] { worker->Run(); });
}

void WorkerPool::Join() {
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

WorkerPool::~WorkerPool() { Join(); }

WorkerPool::Options PoolOptions(const ServerOptions& o) {
  WorkerPool::Options options;
  options.device = o.device == "cuda" ? WorkerPool::Options::Device::kCuda : WorkerPool::Options::Device::kCpu;
  options.cpu_workers = o.workers;
  options.intra_op_threads = o.intra_op_threads;
  options.compute_nice = o.compute_nice;
  if (const char* gate = std::getenv("TCM_TEST_BATCH_GATE")) options.batch_gate_file = gate;
  return options;
}

}  // namespace tcm
