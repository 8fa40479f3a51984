#include "model/concat.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/torch.h>

#include <algorithm>
#include <optional>

#include "model/concat_kernel.h"
#include "model/silu_kernel.h"

namespace tcm {
namespace {

// Values per parallel chunk: large enough that a thread's start costs little.
constexpr int64_t kGrainValues = 16384;

// The layout both inputs share, if the own loop can join them.
std::optional<torch::MemoryFormat> KernelLayout(const torch::Tensor& a, const torch::Tensor& b) {
  const auto type = a.scalar_type();
  if (!a.is_cpu() || !b.is_cpu() || torch::GradMode::is_enabled() || b.scalar_type() != type ||
      (type != torch::kFloat32 && type != torch::kBFloat16) || a.dim() != 4 || b.dim() != 4 || a.size(0) != b.size(0) ||
      a.size(2) != b.size(2) || a.size(3) != b.size(3))
    return std::nullopt;
  for (const auto layout : {torch::MemoryFormat::ChannelsLast, torch::MemoryFormat::Contiguous})
    if (a.is_contiguous(layout) && b.is_contiguous(layout)) return layout;
  return std::nullopt;
}

// Joins a and b as rows: a pixel's channels in channels-last, an image's
// planes in NCHW. With `silu_out` defined, each chunk's SiLU too.
template <typename T>
void Join(const torch::Tensor& a, float scale_a, const torch::Tensor& b, float scale_b, bool channels_last,
          const torch::Tensor& out, const torch::Tensor& silu_out) {
  const int64_t pixels = a.size(2) * a.size(3);
  const int64_t rows = channels_last ? a.size(0) * pixels : a.size(0);
  const int64_t na = channels_last ? a.size(1) : a.size(1) * pixels;
  const int64_t nb = channels_last ? b.size(1) : b.size(1) * pixels;
  const T* pa = static_cast<const T*>(a.data_ptr());
  const T* pb = static_cast<const T*>(b.data_ptr());
  T* po = static_cast<T*>(out.data_ptr());
  const int64_t grain = std::max<int64_t>(1, kGrainValues / std::max<int64_t>(na + nb, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    T* rows = po + begin * (na + nb);
    ScaledConcatRows(pa + begin * na, na, scale_a, pb + begin * nb, nb, scale_b, end - begin, rows);
    if (silu_out.defined())
      SiluRow(rows, static_cast<T*>(silu_out.data_ptr()) + begin * (na + nb), (end - begin) * (na + nb), 1.0f);
  });
}

// The own loop's ScaledCat in `layout`; with `with_silu`, its SiLU too.
WithSilu JoinInLayout(const torch::Tensor& a, double scale_a, const torch::Tensor& b, double scale_b,
                      torch::MemoryFormat layout, bool with_silu) {
  const auto options = a.options().memory_format(layout);
  const std::vector<int64_t> sizes = {a.size(0), a.size(1) + b.size(1), a.size(2), a.size(3)};
  WithSilu result{torch::empty(sizes, options), with_silu ? torch::empty(sizes, options) : torch::Tensor()};
  const bool channels_last = layout == torch::MemoryFormat::ChannelsLast;
  const float sa = static_cast<float>(scale_a), sb = static_cast<float>(scale_b);
  if (a.scalar_type() == torch::kBFloat16)
    Join<Bf16Bits>(a, sa, b, sb, channels_last, result.value, result.silu);
  else
    Join<float>(a, sa, b, sb, channels_last, result.value, result.silu);
  return result;
}

}  // namespace

torch::Tensor ScaledCat(const torch::Tensor& a, double scale_a, const torch::Tensor& b, double scale_b) {
  const std::optional<torch::MemoryFormat> layout = KernelLayout(a, b);
  if (!layout) {
    torch::Tensor out = torch::cat({a, b}, 1);
    if (scale_a != 1.0) out.narrow(1, 0, a.size(1)).mul_(scale_a);
    if (scale_b != 1.0) out.narrow(1, a.size(1), b.size(1)).mul_(scale_b);
    return out;
  }
  RECORD_FUNCTION("tcm::scaled_cat", std::vector<c10::IValue>{});  // named in tcm-model-bench --profile
  return JoinInLayout(a, scale_a, b, scale_b, *layout, /*with_silu=*/false).value;
}

WithSilu ScaledCatAndSilu(const torch::Tensor& a, double scale_a, const torch::Tensor& b, double scale_b) {
  const std::optional<torch::MemoryFormat> layout = KernelLayout(a, b);
  if (!layout) {
    torch::Tensor value = ScaledCat(a, scale_a, b, scale_b);
    return {value, Silu(value)};
  }
  RECORD_FUNCTION("tcm::scaled_cat_and_silu", std::vector<c10::IValue>{});
  return JoinInLayout(a, scale_a, b, scale_b, *layout, /*with_silu=*/true);
}

}  // namespace tcm
