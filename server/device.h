// Where a worker runs its replicas: the CPU, or one CUDA device with its own
// stream. Written against LibTorch's device-generic API; the few CUDA-only
// calls are compiled only with -DTCM_WITH_CUDA=ON (a CUDA LibTorch).
//
// On a CUDA device each context has its own pool stream, pinned host buffers
// that stage its inputs (allocated once, grown as needed), and CUDA graphs
// captured per replica and batch-size bucket (docs/GPU.md).
#ifndef TCM_SERVER_DEVICE_H_
#define TCM_SERVER_DEVICE_H_

#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/denoiser.h"

namespace tcm {

// The torch dtype of a resolved precision (DEFAULT: float32).
torch::ScalarType ComputeDtype(v1::InstanceConfig::Precision precision);

class DeviceContext {
 public:
  static DeviceContext Cpu();

  std::string name() const { return device_.str(); }

  // Moves `replica` onto this device and sets it to compute in the config's
  // (resolved) instance.precision, channels-last.
  void Adopt(Denoiser& replica, const v1::ModelConfig& config);

  // Makes this device (and its stream) current for the calling thread.
  void BindThisThread();

  // Batch sizes a worker should run once at warm-up, up to `max_batch_size`,
  // so that serving never pays a one-off cost per size: on a CUDA device each
  // graph bucket (powers of two), whose first batch captures its graph; none
  // on the CPU.
  std::vector<int> WarmUpSizes(int max_batch_size) const;

  // D(x, sigma, labels) for CPU inputs; returns float32 CPU outputs. On a
  // CUDA device a batch is padded to its bucket (the next power of two) and
  // runs as that bucket's graph, captured on first use; a composed model
  // (transition_t) runs eagerly. Not thread-safe: one worker per context.
  torch::Tensor Run(Denoiser& replica, const torch::Tensor& x, const torch::Tensor& sigma, const torch::Tensor& labels);

  struct CudaState;  // stream, staging buffers and graphs of a CUDA worker; defined only in CUDA builds

 private:
  explicit DeviceContext(torch::Device device) : device_(device) {}
  friend absl::StatusOr<std::vector<DeviceContext>> CudaDevices(int workers_per_device);

  torch::Device device_;
  std::shared_ptr<CudaState> cuda_;
};

// `workers_per_device` contexts per visible CUDA device, each with its own
// stream, ordered round the devices (context i on device i % devices); or an
// error in a CPU-only build or when no device is visible.
absl::StatusOr<std::vector<DeviceContext>> CudaDevices(int workers_per_device);

}  // namespace tcm

#endif  // TCM_SERVER_DEVICE_H_
