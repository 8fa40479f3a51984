#include "server/device.h"

#include <torch/torch.h>

#ifdef TCM_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace tcm {

#ifdef TCM_WITH_CUDA
struct DeviceContext::CudaState {
  c10::cuda::CUDAStream stream;
};
#endif

torch::ScalarType ComputeDtype(v1::InstanceConfig::Precision precision) {
  switch (precision) {
    case v1::InstanceConfig::PRECISION_BF16:
      return torch::kBFloat16;
    case v1::InstanceConfig::PRECISION_FP16:
      return torch::kHalf;
    default:
      return torch::kFloat32;
  }
}

DeviceContext DeviceContext::Cpu() { return DeviceContext(torch::Device(torch::kCPU)); }

void DeviceContext::Adopt(Denoiser& replica, const v1::ModelConfig& config) {
  if (!device_.is_cpu()) replica.to(device_);
  replica.SetCompute(ComputeDtype(config.instance().precision()), /*channels_last=*/true);
  replica.PrepareForInference();  // recompute the cached constants on the device, in its precision
}

void DeviceContext::BindThisThread() {
#ifdef TCM_WITH_CUDA
  if (cuda_) c10::cuda::setCurrentCUDAStream(cuda_->stream);
#endif
}

torch::Tensor DeviceContext::Run(Denoiser& replica, const torch::Tensor& x, const torch::Tensor& sigma,
                                 const torch::Tensor& labels) {
  if (device_.is_cpu()) return replica.forward(x, sigma, labels);
#ifdef TCM_WITH_CUDA
  c10::cuda::CUDAStreamGuard guard(cuda_->stream);
  auto to_device = [&](const torch::Tensor& t) {
    return t.defined() ? t.pin_memory().to(device_, /*non_blocking=*/true) : t;
  };
  torch::Tensor out = replica.forward(to_device(x), to_device(sigma), to_device(labels));
  return out.to(torch::kCPU, torch::kFloat32);  // waits for the stream
#else
  return replica.forward(x.to(device_), sigma.to(device_), labels.defined() ? labels.to(device_) : labels)
      .to(torch::kCPU, torch::kFloat32);
#endif
}

absl::StatusOr<std::vector<DeviceContext>> CudaDevices() {
#ifdef TCM_WITH_CUDA
  const int count = static_cast<int>(torch::cuda::device_count());
  if (count == 0) return absl::FailedPreconditionError("--device=cuda: no CUDA device is visible");
  std::vector<DeviceContext> devices;
  for (int i = 0; i < count; ++i) {
    DeviceContext d(torch::Device(torch::kCUDA, i));
    d.cuda_ = std::make_shared<CudaState>(CudaState{c10::cuda::getStreamFromPool(/*isHighPriority=*/false, i)});
    devices.push_back(std::move(d));
  }
  return devices;
#else
  return absl::FailedPreconditionError(
      "--device=cuda: this build has no CUDA support (configure with -DTCM_WITH_CUDA=ON against a CUDA LibTorch)");
#endif
}

}  // namespace tcm
