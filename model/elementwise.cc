#include "model/elementwise.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "model/bf16_bits.h"
#include "model/cpu_clones.h"
#include "model/silu_kernel.h"

namespace tcm {
namespace {

// Values per parallel chunk: large enough that a thread's start costs little.
constexpr int64_t kGrainValues = 16384;
// Partial sums per row in the pixel norm: one vector's lanes, added up in a
// fixed order at the end.
constexpr int64_t kLanes = 16;

bool OnKernelPath(const torch::Tensor& t) {
  return t.is_cpu() && !torch::GradMode::is_enabled() &&
         (t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kBFloat16);
}

// Rows of `groups` groups, each `n` elements of `interleave` vectors
// (element i of vector j at i * interleave + j): every vector divided by its
// norm / sqrt(n) + eps.
template <typename T>
inline __attribute__((always_inline)) void NormRows(const T* __restrict in, T* __restrict out, int64_t rows,
                                                    int64_t groups, int64_t n, int64_t interleave, float inv_sqrt_n,
                                                    float eps) {
  const int64_t group_size = n * interleave;
  for (int64_t r = 0; r < rows * groups; ++r) {
    const T* g = in + r * group_size;
    T* o = out + r * group_size;
    if (interleave == 1) {  // one vector: kLanes partial sums, added in a fixed order
      float partial[kLanes] = {};
      int64_t i = 0;
      for (; i + kLanes <= n; i += kLanes)
        for (int64_t j = 0; j < kLanes; ++j) partial[j] += Widen(g[i + j]) * Widen(g[i + j]);
      for (int64_t j = 0; i + j < n; ++j) partial[j] += Widen(g[i + j]) * Widen(g[i + j]);
      float sum = 0.0f;
      for (int64_t j = 0; j < kLanes; ++j) sum += partial[j];
      const float denominator = std::sqrt(sum) * inv_sqrt_n + eps;
      for (int64_t k = 0; k < n; ++k) Narrow(Widen(g[k]) / denominator, o + k);
      continue;
    }
    for (int64_t j = 0; j < interleave; ++j) {
      float sum = 0.0f;
      for (int64_t i = 0; i < n; ++i) sum += Widen(g[i * interleave + j]) * Widen(g[i * interleave + j]);
      const float denominator = std::sqrt(sum) * inv_sqrt_n + eps;
      for (int64_t i = 0; i < n; ++i) Narrow(Widen(g[i * interleave + j]) / denominator, o + i * interleave + j);
    }
  }
}

TCM_CPU_CLONES void NormRowsFloat(const float* in, float* out, int64_t rows, int64_t groups, int64_t n,
                                  int64_t interleave, float inv_sqrt_n, float eps) {
  NormRows(in, out, rows, groups, n, interleave, inv_sqrt_n, eps);
}
TCM_CPU_CLONES void NormRowsBf16(const Bf16Bits* in, Bf16Bits* out, int64_t rows, int64_t groups, int64_t n,
                                 int64_t interleave, float inv_sqrt_n, float eps) {
  NormRows(in, out, rows, groups, n, interleave, inv_sqrt_n, eps);
}

template <typename T>
inline __attribute__((always_inline)) void AddClamp(T* __restrict y, const T* __restrict x, int64_t n, float alpha,
                                                    float lo, float hi) {
  for (int64_t i = 0; i < n; ++i) Narrow(std::min(std::max(Widen(y[i]) + alpha * Widen(x[i]), lo), hi), y + i);
}

TCM_CPU_CLONES void AddClampFloat(float* y, const float* x, int64_t n, float alpha, float lo, float hi) {
  AddClamp(y, x, n, alpha, lo, hi);
}
TCM_CPU_CLONES void AddClampBf16(Bf16Bits* y, const Bf16Bits* x, int64_t n, float alpha, float lo, float hi) {
  AddClamp(y, x, n, alpha, lo, hi);
}

template <typename T>
T* Data(const torch::Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

bool OnPixelNormKernelPath(const torch::Tensor& x) {
  return OnKernelPath(x) && x.is_contiguous(torch::MemoryFormat::ChannelsLast);
}

// The own loop's pixel norm of channels-last x into `out`; with `silu_out`
// defined, each chunk's SiLU too.
void PixelNormKernel(const torch::Tensor& x, double eps, int64_t groups, int64_t interleave, const torch::Tensor& out,
                     const torch::Tensor& silu_out) {
  const int64_t n = x.size(1) / (groups * interleave);
  const int64_t channels = x.size(1), rows = x.numel() / std::max<int64_t>(channels, 1);
  const float inv_sqrt_n = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n)));
  const float e = static_cast<float>(eps);
  const int64_t grain = std::max<int64_t>(1, kGrainValues / std::max<int64_t>(channels, 1));
  const bool bf16 = x.scalar_type() == torch::kBFloat16;
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    const int64_t offset = begin * channels, values = (end - begin) * channels;
    if (bf16) {
      Bf16Bits* o = Data<Bf16Bits>(out) + offset;
      NormRowsBf16(Data<Bf16Bits>(x) + offset, o, end - begin, groups, n, interleave, inv_sqrt_n, e);
      if (silu_out.defined()) SiluRow(o, Data<Bf16Bits>(silu_out) + offset, values, 1.0f);
    } else {
      float* o = Data<float>(out) + offset;
      NormRowsFloat(Data<float>(x) + offset, o, end - begin, groups, n, interleave, inv_sqrt_n, e);
      if (silu_out.defined()) SiluRow(o, Data<float>(silu_out) + offset, values, 1.0f);
    }
  });
}

}  // namespace

torch::Tensor PixelNorm(const torch::Tensor& x, double eps, int64_t groups, int64_t interleave) {
  TORCH_CHECK(x.dim() == 4 && groups > 0 && interleave > 0 && x.size(1) % (groups * interleave) == 0,
              "PixelNorm: ", x.size(1), " channels do not split into ", groups, " groups of ", interleave, " vectors");
  const int64_t n = x.size(1) / (groups * interleave);
  if (!OnPixelNormKernelPath(x)) {
    const double inv_sqrt_n = 1.0 / std::sqrt(static_cast<double>(n));
    if (groups == 1 && interleave == 1)  // keeps x's layout
      return x / torch::linalg_vector_norm(x, 2, {1}, /*keepdim=*/true).mul(inv_sqrt_n).add_(eps);
    const torch::Tensor v = x.reshape({x.size(0), groups, n, interleave, x.size(2) * x.size(3)});
    torch::Tensor norm = torch::linalg_vector_norm(v, 2, {2}, /*keepdim=*/true);
    return (v / norm.mul(inv_sqrt_n).add_(eps)).reshape(x.sizes());
  }
  RECORD_FUNCTION("tcm::pixel_norm", std::vector<c10::IValue>{});  // named in tcm-model-bench --profile
  torch::Tensor out = torch::empty_like(x);                        // channels-last like x
  PixelNormKernel(x, eps, groups, interleave, out, /*silu_out=*/{});
  return out;
}

WithSilu PixelNormAndSilu(const torch::Tensor& x, double eps) {
  if (!OnPixelNormKernelPath(x)) {  // PixelNorm checks the shape
    torch::Tensor value = PixelNorm(x, eps);
    return {value, Silu(value)};
  }
  RECORD_FUNCTION("tcm::pixel_norm_and_silu", std::vector<c10::IValue>{});
  WithSilu result{torch::empty_like(x), torch::empty_like(x)};
  PixelNormKernel(x, eps, /*groups=*/1, /*interleave=*/1, result.value, result.silu);
  return result;
}

torch::Tensor& AddScaledClamp_(torch::Tensor& y, const torch::Tensor& x, double alpha, double clip) {
  const bool same_layout =
      (y.is_contiguous() && x.is_contiguous()) || (y.dim() == 4 && y.is_contiguous(torch::MemoryFormat::ChannelsLast) &&
                                                   x.is_contiguous(torch::MemoryFormat::ChannelsLast));
  if (!OnKernelPath(y) || !x.is_cpu() || x.scalar_type() != y.scalar_type() || x.sizes() != y.sizes() || !same_layout ||
      x.data_ptr() == y.data_ptr()) {
    y.add_(x, alpha);
    if (clip > 0) y.clamp_(-clip, clip);
    return y;
  }
  RECORD_FUNCTION("tcm::add_scaled_clamp_", std::vector<c10::IValue>{});
  const float a = static_cast<float>(alpha);
  const float hi = clip > 0 ? static_cast<float>(clip) : INFINITY, lo = -hi;
  at::parallel_for(0, y.numel(), kGrainValues, [&](int64_t begin, int64_t end) {
    if (y.scalar_type() == torch::kBFloat16)
      AddClampBf16(Data<Bf16Bits>(y) + begin, Data<Bf16Bits>(x) + begin, end - begin, a, lo, hi);
    else
      AddClampFloat(Data<float>(y) + begin, Data<float>(x) + begin, end - begin, a, lo, hi);
  });
  return y;
}

}  // namespace tcm
