// Where a worker runs its replicas: the CPU, or one CUDA device with its own
// stream. Written against LibTorch's device-generic API; the few CUDA-only
// calls are compiled only with -DTCM_WITH_CUDA=ON (a CUDA LibTorch).
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

  // D(x, sigma, labels) for CPU inputs; returns float32 CPU outputs.
  torch::Tensor Run(Denoiser& replica, const torch::Tensor& x, const torch::Tensor& sigma, const torch::Tensor& labels);

  struct CudaState;  // stream of a CUDA worker; defined only in CUDA builds

 private:
  explicit DeviceContext(torch::Device device) : device_(device) {}
  friend absl::StatusOr<std::vector<DeviceContext>> CudaDevices();

  torch::Device device_;
  std::shared_ptr<CudaState> cuda_;
};

// One context per visible CUDA device, or an error in a CPU-only build or
// when no device is visible.
absl::StatusOr<std::vector<DeviceContext>> CudaDevices();

}  // namespace tcm

#endif  // TCM_SERVER_DEVICE_H_
