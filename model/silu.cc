#include "model/silu.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/torch.h>

#include <algorithm>

#include "model/silu_kernel.h"

namespace tcm {
namespace {

// Values per parallel chunk: large enough that a thread's start costs little.
constexpr int64_t kGrainValues = 16384;

// The own kernels serve CPU inference on dense float32 or bf16 tensors.
bool UsesKernel(const torch::Tensor& x) {
  return x.is_cpu() && !torch::GradMode::is_enabled() &&
         (x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kBFloat16) &&
         (x.is_contiguous() || x.is_contiguous(torch::MemoryFormat::ChannelsLast));
}

template <typename T>
T* Data(const torch::Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

// out = silu(in) over the whole buffer; `out` is `in` or laid out like it.
template <typename T>
void SiluAll(const torch::Tensor& in, const torch::Tensor& out) {
  const T* src = Data<T>(in);
  T* dst = Data<T>(out);
  at::parallel_for(0, in.numel(), kGrainValues,
                   [&](int64_t begin, int64_t end) { SiluRow(src + begin, dst + begin, end - begin, 1.0f); });
}

// x[n, c, h, w] = silu(x[n, c, h, w] * scale[n, c]), x 4-d in either layout.
template <typename T>
void ScaledSiluInPlace(const torch::Tensor& x, const torch::Tensor& scale) {
  const int64_t n = x.size(0), channels = x.size(1), pixels = x.size(2) * x.size(3);
  T* data = Data<T>(x);
  const float* s = scale.data_ptr<float>();
  if (x.is_contiguous()) {  // one row per (image, channel) plane, one scale each
    const int64_t grain = std::max<int64_t>(1, kGrainValues / std::max<int64_t>(pixels, 1));
    at::parallel_for(0, n * channels, grain, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) SiluRow(data + r * pixels, data + r * pixels, pixels, s[r]);
    });
    return;
  }
  // Channels-last: one row per pixel, its image's channel scales.
  const int64_t grain = std::max<int64_t>(1, kGrainValues / std::max<int64_t>(channels, 1));
  at::parallel_for(0, n * pixels, grain, [&](int64_t begin, int64_t end) {
    while (begin < end) {  // the chunk's pixels, one image at a time
      const int64_t image = begin / pixels;
      const int64_t stop = std::min(end, (image + 1) * pixels);
      T* rows = data + begin * channels;
      SiluRowsScaled(rows, rows, stop - begin, channels, s + image * channels);
      begin = stop;
    }
  });
}

template <typename F>
void ForDtype(const torch::Tensor& x, F&& f) {
  if (x.scalar_type() == torch::kBFloat16)
    f(Bf16Bits{});
  else
    f(float{});
}

}  // namespace

torch::Tensor Silu(const torch::Tensor& x) {
  if (!UsesKernel(x)) return torch::silu(x);
  RECORD_FUNCTION("tcm::silu", std::vector<c10::IValue>{});  // named in tcm-model-bench --profile
  torch::Tensor out = torch::empty_like(x);                  // keeps x's layout
  ForDtype(x, [&](auto tag) { SiluAll<decltype(tag)>(x, out); });
  return out;
}

torch::Tensor& Silu_(torch::Tensor& x) {
  if (!UsesKernel(x)) return torch::silu_(x);
  RECORD_FUNCTION("tcm::silu_", std::vector<c10::IValue>{});
  ForDtype(x, [&](auto tag) { SiluAll<decltype(tag)>(x, x); });
  return x;
}

torch::Tensor& ScaledSilu_(torch::Tensor& x, const torch::Tensor& scale) {
  if (!UsesKernel(x) || x.dim() != 4 || scale.dim() != 2 || scale.size(0) != x.size(0) || scale.size(1) != x.size(1)) {
    x.mul_(scale.to(x.scalar_type()).unsqueeze(2).unsqueeze(3));
    return torch::silu_(x);
  }
  RECORD_FUNCTION("tcm::scaled_silu_", std::vector<c10::IValue>{});
  const torch::Tensor s = scale.to(torch::kFloat32).contiguous();
  ForDtype(x, [&](auto tag) { ScaledSiluInPlace<decltype(tag)>(x, s); });
  return x;
}

}  // namespace tcm
