#include "server/worker_pool.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
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
    request->DropImage(why, cause == DropCause::kDeadlineUnmeetable ? "deadline_unmeetable"
                            : cause == DropCause::kShutdown         ? "shutdown"
                                                                    : "");
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

  // A replica of `model` on this worker's device.
  absl::StatusOr<std::shared_ptr<Denoiser>> NewReplica(const ModelDirectory& model) {
    auto replica = BuildReplica(model);
    if (!replica.ok()) return replica.status();
    try {
      device_.Adopt(**replica, model.config);
    } catch (const std::exception& e) {
      return absl::InternalError(
          absl::StrCat("moving '", model.name, "' to ", device_.name(), ": ", ExceptionMessage(e)));
    }
    return *replica;
  }

  // Serves `model` (the next model index) on this worker, or skips it.
  // Before Start() only.
  absl::Status AddReplica(const ModelDirectory& model, bool serve) {
    std::shared_ptr<Denoiser> replica;
    if (serve) {
      auto built = NewReplica(model);
      if (!built.ok()) return built.status();
      replica = *std::move(built);
    }
    std::lock_guard<std::mutex> lock(replicas_mu_);
    replicas_.push_back(replica);
    serves_.push_back(replica != nullptr);
    return absl::OkStatus();
  }

  // Sets the replica of model `index` (null: none); the batcher's model set
  // of this worker follows in ServeModel.
  void SetReplica(int index, std::shared_ptr<Denoiser> replica) {
    std::lock_guard<std::mutex> lock(replicas_mu_);
    if (replicas_.size() <= static_cast<size_t>(index)) replicas_.resize(index + 1);
    replicas_[index] = std::move(replica);
  }

  // Under the batcher's lock (Batcher::AddModel): from now on NextBatch may
  // hand this worker batches of model `index` if it has a replica of it.
  void ServeModel(int index) {
    const bool has_replica = Replica(index) != nullptr;
    if (serves_.size() <= static_cast<size_t>(index)) serves_.resize(index + 1, false);
    serves_[index] = has_replica;
  }

  // The replica of model `index`; null where this worker does not serve it.
  std::shared_ptr<Denoiser> Replica(int index) {
    std::lock_guard<std::mutex> lock(replicas_mu_);
    return static_cast<size_t>(index) < replicas_.size() ? replicas_[index] : nullptr;
  }

  // Warms up a replica of model `index` that no batch uses yet, on the
  // calling thread with this worker's thread settings (see WarmUp).
  absl::Status WarmUpModel(int index, int batch_size) {
    std::shared_ptr<Denoiser> replica = Replica(index);
    if (replica == nullptr) return absl::OkStatus();
    ConfigureThisThread();
    return WarmUpReplica(index, *replica, batch_size);
  }

  // Per served model: a pass of `batch_size` images and one of each size the
  // device asks for (CUDA graph buckets), then timed passes of one image and
  // of a full batch for the batcher's pass-time estimate (each after an
  // untimed first pass of its size, which pays one-off set-up).
  absl::Status WarmUp(int batch_size) {
    ConfigureThisThread();
    const int models = static_cast<int>(serves_.size());
    for (int model = 0; model < models; ++model) {
      std::shared_ptr<Denoiser> replica = Replica(model);
      if (replica == nullptr) continue;
      if (absl::Status warmed = WarmUpReplica(model, *replica, batch_size); !warmed.ok()) return warmed;
    }
    return absl::OkStatus();
  }

  void Run() {
    // Before the first parallel region, so that the OpenMP team inherits it.
    if (absl::Status nice = LowerThisThreadPriority(nice_); !nice.ok())
      std::fprintf(stderr, "tcm-server: worker %d keeps its priority: %s\n", id_, nice.ToString().c_str());
    ConfigureThisThread();
    // serves_ changes only under the batcher's lock (ServeModel), which is
    // where NextBatch reads it.
    while (std::unique_ptr<Batch> batch = batcher_->NextBatch(serves_)) {
      const absl::Time start = absl::Now();
      RunBatch(*batch);
      batcher_->BatchDone(batch->model);
      metrics_->worker_busy(id_).Increment(absl::ToDoubleSeconds(absl::Now() - start));
    }
  }

 private:
  void ConfigureThisThread() {
    // LibTorch's thread count is per thread (OpenMP): set it in every worker.
    ConfigureCpuThreads(threads_);
    device_.BindThisThread();
  }

  // WarmUp's passes for the replica of model `index`.
  absl::Status WarmUpReplica(int index, Denoiser& replica, int batch_size) {
    // Full batches timed up to the default size; the estimate scales larger ones.
    const size_t max_batch = batcher_->MaxBatchSize(index);
    const int full = static_cast<int>(std::min<size_t>(max_batch, kDefaultMaxBatchSize));
    try {
      WarmUpPass(replica, batch_size);
      for (int size : device_.WarmUpSizes(static_cast<int>(max_batch))) WarmUpPass(replica, size);
      for (int size : {1, full}) {
        if (size != batch_size) WarmUpPass(replica, size);
        const absl::Time start = absl::Now();
        WarmUpPass(replica, size);
        batcher_->ObservePass(index, size, absl::Now() - start);
      }
    } catch (const std::exception& e) {
      return absl::InternalError(
          absl::StrCat("warm-up of '", replica.config().name(), "' failed: ", ExceptionMessage(e)));
    }
    return absl::OkStatus();
  }

  // One first-step pass of `n` images of class 0. Throws what the network
  // throws, and std::runtime_error when an output value is not finite (NaN
  // or infinite: weights or a config that compute garbage, which would be
  // served as images while health says SERVING). Other classes and second
  // steps are checked as they are served (RunBatch: the call fails).
  void WarmUpPass(Denoiser& replica, int n) {
    const auto& c = replica.config();
    std::vector<torch::Tensor> inputs;
    for (int i = 0; i < n; ++i) inputs.push_back(StepInput(c, 0, i, 0, {}));
    torch::Tensor labels = c.num_classes() ? torch::zeros({n}, torch::kInt64) : torch::Tensor();
    const torch::Tensor out = Forward(replica, torch::stack(inputs), torch::full({n}, StepSigma(c, 0)), labels);
    torch::InferenceMode inference;
    const int64_t bad = (~torch::isfinite(out)).sum().item<int64_t>();
    if (bad > 0)
      throw std::runtime_error(absl::StrCat(bad, " of the ", out.numel(), " output values of a first-step pass of ", n,
                                            " image(s) are not finite (NaN or infinite): check its weights and its "
                                            "config (sigma_data, t_max)"));
  }

  // [N] bool: whether every value of row i of `out` is finite.
  static torch::Tensor FiniteRows(const torch::Tensor& out) {
    torch::InferenceMode inference;
    return torch::isfinite(out).flatten(1).all(1);
  }

  torch::Tensor Forward(Denoiser& replica, const torch::Tensor& x, const torch::Tensor& sigma,
                        const torch::Tensor& labels) {
    torch::InferenceMode inference;
    return device_.Run(replica, x, sigma, labels);
  }

  void RunBatch(Batch& batch) {
    const std::shared_ptr<Denoiser> held = Replica(batch.model);  // a replaced version lives until its last batch
    Denoiser& replica = *held;
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
    const torch::Tensor finite = FiniteRows(out);
    std::set<RequestState*> served;  // each request is charged the batch once
    for (int i = 0; i < n; ++i) {
      auto task = std::unique_ptr<GenerationTask>(static_cast<GenerationTask*>(batch.tasks[i].release()));
      if (served.insert(task->request.get()).second) task->request->AddCompute(compute);
      if (!finite[i].item<bool>()) {  // garbage, not an image: the call fails rather than serve it
        const auto& spec = task->request->spec();
        const int64_t label = spec.class_labels.at(task->index);
        task->request->DropImage(absl::InternalError(absl::StrCat(
            "model '", config.name(), "' computed output values that are not finite (NaN or infinite) for image ",
            task->index, label >= 0 ? absl::StrCat(" (class ", label, ")") : "", " at step ", task->step + 1, " of ",
            spec.steps, ": its weights or config compute garbage for this input")));
        continue;
      }
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
  std::mutex replicas_mu_;
  std::vector<std::shared_ptr<Denoiser>> replicas_;  // by model index; null where not served
  Batcher::ModelSet serves_;                         // by model index; see Run
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
  pool->device_ = options.device;
  pool->gpus_ = gpus;
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

absl::StatusOr<int> WorkerPool::AddModel(const ModelDirectory& model, const Batcher::ModelQueueOptions& queue,
                                         int warmup_batch_size) {
  auto count = InstanceCount(model, device_, size(), gpus_);
  if (!count.ok()) return count.status();
  // Built before the batcher knows the model, so that no worker is handed a
  // batch of it without its replica.
  std::vector<std::shared_ptr<Denoiser>> replicas(workers_.size());
  for (int i = 0; i < *count && i < size(); ++i) {
    auto replica = workers_[i]->NewReplica(model);
    if (!replica.ok()) return replica.status();
    replicas[i] = *std::move(replica);
  }
  std::vector<Worker*> workers;
  for (auto& w : workers_) workers.push_back(w.get());
  auto index = batcher_->AddModel(queue, [&](int added) {
    for (size_t i = 0; i < workers.size(); ++i) {
      workers[i]->SetReplica(added, replicas[i]);
      workers[i]->ServeModel(added);
    }
  });
  if (!index.ok()) return index.status();
  for (auto& w : workers_) {
    if (absl::Status warmed = w->WarmUpModel(*index, warmup_batch_size); !warmed.ok()) {
      batcher_->RetireModel(*index);  // never published: nothing is queued for it
      RemoveModel(*index);
      return warmed;
    }
  }
  return *index;
}

void WorkerPool::RemoveModel(int index) {
  for (auto& w : workers_) w->SetReplica(index, nullptr);
  batcher_->ReleaseModel(index);
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
