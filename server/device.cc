#include "server/device.h"

#include <torch/torch.h>

#ifdef TCM_WITH_CUDA
#include <ATen/Context.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "model/torch_error.h"
#endif

namespace tcm {

#ifdef TCM_WITH_CUDA
namespace {

// LibTorch 1.13 captures in cudaStreamCaptureModeGlobal, which forbids
// potentially unsafe CUDA calls in every thread of the process while a capture
// runs. So a capture runs alone: passes hold this shared, captures exclusively.
absl::Mutex& CaptureMutex() {
  static absl::Mutex* const mu = new absl::Mutex;
  return *mu;
}

// TCM_CUDA_GRAPHS=0 runs every pass eagerly: for comparison, and a way out.
bool GraphsEnabled() {
  const char* value = std::getenv("TCM_CUDA_GRAPHS");
  return value == nullptr || std::strcmp(value, "0") != 0;
}

// The graph bucket of a batch of n rows: the next power of two.
int64_t Bucket(int64_t n) {
  int64_t bucket = 1;
  while (bucket < n) bucket *= 2;
  return bucket;
}

// Copies the CPU tensor `t` into the front of the pinned buffer `host` (grown
// when too small) and returns that part, shaped as `t`.
torch::Tensor Stage(const torch::Tensor& t, torch::Tensor& host) {
  if (!host.defined() || host.scalar_type() != t.scalar_type() || host.numel() < t.numel())
    host = torch::empty({t.numel()}, torch::TensorOptions().dtype(t.scalar_type()).pinned_memory(true));
  torch::Tensor staged = host.narrow(0, 0, t.numel()).view(t.sizes());
  staged.copy_(t);
  return staged;
}

}  // namespace

struct DeviceContext::CudaState {
  // One captured pass of a bucket: static inputs (rows past a batch keep
  // earlier valid values: padding), the graph, and its static output.
  struct Graph {
    torch::Tensor x, sigma, labels, out;
    at::cuda::CUDAGraph graph;
  };

  explicit CudaState(c10::cuda::CUDAStream stream) : stream(stream) {}

  // Inputs staged through the pinned buffers, then copied without blocking the
  // host. Every pass ends with a synchronous copy back on the same stream, so
  // no copy from a buffer is in flight when the next pass overwrites it.
  torch::Tensor ToDevice(const torch::Tensor& t, torch::Tensor& host, torch::Device device) {
    return t.defined() ? Stage(t, host).to(device, t.scalar_type(), /*non_blocking=*/true) : t;
  }

  torch::Tensor Eager(Denoiser& replica, const torch::Tensor& x, const torch::Tensor& sigma,
                      const torch::Tensor& labels, torch::Device device) {
    return replica
        .forward(ToDevice(x, host_x, device), ToDevice(sigma, host_sigma, device),
                 ToDevice(labels, host_labels, device))
        .to(torch::kCPU, torch::kFloat32);  // waits for the stream
  }

  // A warm-up pass on this stream (lazy cuBLAS/cuDNN set-up stays out of the
  // capture), then the capture. Called with CaptureMutex held exclusively.
  std::unique_ptr<Graph> Capture(Denoiser& replica, int64_t bucket, const torch::Tensor& x_like, bool labelled,
                                 torch::Device device) {
    auto g = std::make_unique<Graph>();
    std::vector<int64_t> shape = x_like.sizes().vec();
    shape[0] = bucket;
    const auto options = torch::TensorOptions().device(device);
    g->x = torch::zeros(shape, options.dtype(torch::kFloat32));
    g->sigma = torch::ones({bucket}, options.dtype(torch::kFloat32));
    if (labelled) g->labels = torch::zeros({bucket}, options.dtype(torch::kInt64));
    replica.forward(g->x, g->sigma, g->labels);
    stream.synchronize();
    g->graph.capture_begin();
    bool ending = false;
    try {
      g->out = replica.forward(g->x, g->sigma, g->labels);
      ending = true;
      g->graph.capture_end();
    } catch (...) {
      if (!ending) {  // the pass failed: end the stream's capture sequence (this throws too: it is invalid)
        try {
          g->graph.capture_end();
        } catch (const std::exception&) {
        }
      }
      (void)cudaGetLastError();  // so that later launches do not report the failed capture
      // LibTorch 1.13 frees a graph's private pool only once a capture has
      // ended well: a failed capture keeps its pool (once per replica, which
      // then runs eagerly).
      throw;
    }
    return g;
  }

  torch::Tensor Replay(Graph& g, const torch::Tensor& x, const torch::Tensor& sigma, const torch::Tensor& labels) {
    const int64_t n = x.size(0);
    TORCH_CHECK(labels.defined() == g.labels.defined(), "class labels given to a graph captured without them");
    g.x.narrow(0, 0, n).copy_(Stage(x, host_x), /*non_blocking=*/true);
    g.sigma.narrow(0, 0, n).copy_(Stage(sigma, host_sigma), /*non_blocking=*/true);
    if (labels.defined()) g.labels.narrow(0, 0, n).copy_(Stage(labels, host_labels), /*non_blocking=*/true);
    g.graph.replay();
    return g.out.narrow(0, 0, n).to(torch::kCPU, torch::kFloat32);  // waits for the stream
  }

  c10::cuda::CUDAStream stream;
  // Pinned staging buffers.
  torch::Tensor host_x, host_sigma, host_labels;
  // Graphs by replica and bucket, and the replicas whose capture failed.
  std::map<std::pair<const Denoiser*, int64_t>, std::unique_ptr<Graph>> graphs;
  std::set<const Denoiser*> eager;
  const bool graphs_enabled = GraphsEnabled();
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
  replica.SetRowShards(device_.is_cpu());
}

void DeviceContext::BindThisThread() {
#ifdef TCM_WITH_CUDA
  if (cuda_) c10::cuda::setCurrentCUDAStream(cuda_->stream);
#endif
}

std::vector<int> DeviceContext::WarmUpSizes(int max_batch_size) const {
  std::vector<int> sizes;
#ifdef TCM_WITH_CUDA
  if (cuda_ && cuda_->graphs_enabled)
    for (int bucket = 1; bucket / 2 < max_batch_size; bucket *= 2) sizes.push_back(std::min(bucket, max_batch_size));
#else
  (void)max_batch_size;
#endif
  return sizes;
}

torch::Tensor DeviceContext::Run(Denoiser& replica, const torch::Tensor& x, const torch::Tensor& sigma,
                                 const torch::Tensor& labels) {
  if (device_.is_cpu()) return replica.forward(x, sigma, labels);
#ifdef TCM_WITH_CUDA
  CudaState& s = *cuda_;
  c10::cuda::CUDAStreamGuard guard(s.stream);
  if (!s.graphs_enabled || replica.below_transition() != nullptr || s.eager.count(&replica)) {
    absl::ReaderMutexLock no_capture(&CaptureMutex());
    return s.Eager(replica, x, sigma, labels, device_);
  }
  const auto key = std::make_pair(static_cast<const Denoiser*>(&replica), Bucket(x.size(0)));
  if (auto it = s.graphs.find(key); it != s.graphs.end()) {
    absl::ReaderMutexLock no_capture(&CaptureMutex());
    return s.Replay(*it->second, x, sigma, labels);
  }
  absl::WriterMutexLock capturing(&CaptureMutex());
  try {
    s.graphs[key] = s.Capture(replica, key.second, x, labels.defined(), device_);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tcm-server: CUDA graph capture of '%s' (batch %lld) on %s failed, running it eagerly: %s\n",
                 replica.config().name().c_str(), static_cast<long long>(key.second), name().c_str(),
                 ExceptionMessage(e).c_str());
    s.graphs.erase(key);
    s.eager.insert(&replica);
    return s.Eager(replica, x, sigma, labels, device_);
  }
  return s.Replay(*s.graphs.at(key), x, sigma, labels);
#else
  return replica.forward(x.to(device_), sigma.to(device_), labels.defined() ? labels.to(device_) : labels)
      .to(torch::kCPU, torch::kFloat32);
#endif
}

absl::StatusOr<std::vector<DeviceContext>> CudaDevices(int workers_per_device) {
#ifdef TCM_WITH_CUDA
  const int count = static_cast<int>(torch::cuda::device_count());
  if (count == 0) return absl::FailedPreconditionError("--device=cuda: no CUDA device is visible");
  if (workers_per_device < 1) return absl::InvalidArgumentError("instance.count: must be at least 1 per GPU");
  // fp32 means fp32 on a GPU too: no TF32 convolutions (LibTorch 1.13 allows
  // them by default); bf16 and fp16 are the fast precisions.
  at::globalContext().setAllowTF32CuDNN(false);
  at::globalContext().setAllowTF32CuBLAS(false);
  std::vector<DeviceContext> devices;
  for (int w = 0; w < workers_per_device; ++w) {
    for (int i = 0; i < count; ++i) {
      DeviceContext d(torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(i)));
      d.cuda_ = std::make_shared<CudaState>(
          c10::cuda::getStreamFromPool(/*isHighPriority=*/false, static_cast<c10::DeviceIndex>(i)));
      devices.push_back(std::move(d));
    }
  }
  return devices;
#else
  (void)workers_per_device;
  return absl::FailedPreconditionError(
      "--device=cuda: this build has no CUDA support (configure with -DTCM_WITH_CUDA=ON against a CUDA LibTorch)");
#endif
}

}  // namespace tcm
