// Workers that pull batches from the Batcher and run them on a model
// replica: a configured number of CPU workers, or on CUDA the largest
// instance.count of any model (default 1) per visible GPU, each with its own
// stream; each worker has its own replica of every model it serves. On the
// CPU a model's config may ask for fewer workers (instance.count: workers
// 0..count-1 serve it), on CUDA for fewer per GPU; its instance.kind, if set,
// must match the device.
//
// The pool is the service's GenerationQueue: a submitted request becomes one
// task per image in the Batcher, and each task keeps its sampling-step state
// (the step it is at, the previous step's output) on this, the LibTorch, side.
#ifndef TCM_SERVER_WORKER_POOL_H_
#define TCM_SERVER_WORKER_POOL_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "model/model_repository.h"
#include "server/batcher.h"
#include "server/generation_queue.h"
#include "server/metrics.h"
#include "server/request_state.h"
#include "server/server_options.h"

namespace tcm {

class WorkerPool final : public GenerationQueue {
 public:
  struct Options {
    enum class Device { kCpu, kCuda };
    Device device = Device::kCpu;
    int cpu_workers = 1;       // workers on the CPU
    int intra_op_threads = 0;  // LibTorch threads per CPU worker; 0 = cores / workers
    // Nice increment of each worker thread, taken before its first batch so
    // that its intra-op threads inherit it: the gRPC threads then get a core
    // at once while every core computes. 0 = none.
    int compute_nice = 0;
    // Called by a worker just before it computes a batch. An exception thrown
    // here fails that batch exactly as a failing forward pass does: the seam
    // through which tests inject faults. Empty in the server.
    std::function<void(const Batch&)> before_batch;
    // For tests: before each batch a worker waits while this file exists, so
    // that a test holds work in the queue without depending on how fast
    // batches run. Empty in production (tcm-server takes it from the
    // environment variable TCM_TEST_BATCH_GATE).
    std::string batch_gate_file;
  };

  // Builds every worker's replicas. `batcher` and `metrics` must outlive the pool.
  static absl::StatusOr<std::unique_ptr<WorkerPool>> Create(const Options& options,
                                                            const std::vector<ModelDirectory>& models, Batcher* batcher,
                                                            ServerMetrics* metrics);
  ~WorkerPool() override;

  // Queues one task per image of `request` in the batcher (all or none).
  absl::Status Submit(const std::shared_ptr<RequestState>& request) override;

  // Runs one batch of `batch_size` first-step images of every model on every
  // worker, so that the first request pays no warm-up; then times passes of
  // one image and of a full batch (at most kDefaultMaxBatchSize images) for
  // the batcher's pass-time estimate.
  absl::Status WarmUp(int batch_size);

  // While serving (CPU only): builds a replica of `model` on each worker its
  // instance.count asks for, adds its queue to the batcher with `queue`'s
  // options and warms the replicas up on the calling thread (as WarmUp does),
  // while the workers go on serving. Returns the model's index in the
  // batcher. Nothing is submitted to it until the caller publishes it.
  absl::StatusOr<int> AddModel(const ModelDirectory& model, const Batcher::ModelQueueOptions& queue,
                               int warmup_batch_size);
  // Frees the replicas of model `index` (a batch still running keeps its
  // replica until it ends) and its batcher queue (Batcher::ReleaseModel).
  // Call once the batcher says the model is idle.
  void RemoveModel(int index);

  // Starts the workers; they run until the batcher is closed and drained.
  void Start();
  // Waits for the workers to stop.
  void Join();

  int size() const { return static_cast<int>(workers_.size()); }

  class Worker;

 private:
  WorkerPool(Batcher* batcher, ServerMetrics* metrics);
  Batcher* const batcher_;
  ServerMetrics* const metrics_;
  Options::Device device_ = Options::Device::kCpu;
  int gpus_ = 0;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;  // declared last: joined before the workers go
};

// The pool's settings from the server's: device, workers, intra-op threads,
// compute nice value, and the test gate from TCM_TEST_BATCH_GATE.
WorkerPool::Options PoolOptions(const ServerOptions& o);

}  // namespace tcm

#endif  // TCM_SERVER_WORKER_POOL_H_
