#include "model/direct_conv.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/torch.h>

#include <atomic>
#include <cstring>
#include <oneapi/dnnl/dnnl.hpp>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tcm {
namespace {

using dnnl::memory;

std::atomic<bool>& EnabledFlag() {
  static std::atomic<bool> flag{true};
  return flag;
}

const dnnl::engine& CpuEngine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& ThreadStream() {
  thread_local dnnl::stream stream(CpuEngine());
  return stream;
}

memory::data_type DataType(const torch::Tensor& t) {
  return t.scalar_type() == torch::kBFloat16 ? memory::data_type::bf16 : memory::data_type::f32;
}

// What a primitive depends on besides the weight's values.
struct Shape {
  int64_t batch, in_channels, height, width, out_channels, kernel;
  torch::ScalarType dtype;
  int threads;
  bool residual;
  double residual_scale, clip;

  bool operator==(const Shape& o) const {
    return batch == o.batch && in_channels == o.in_channels && height == o.height && width == o.width &&
           out_channels == o.out_channels && kernel == o.kernel && dtype == o.dtype && threads == o.threads &&
           residual == o.residual && residual_scale == o.residual_scale && clip == o.clip;
  }
};

Shape ShapeOf(const torch::Tensor& x, const torch::Tensor& w, const ConvEpilogue& e) {
  const bool residual = e.residual.defined();
  return Shape{x.size(0),
               x.size(1),
               x.size(2),
               x.size(3),
               w.size(0),
               w.size(2),
               x.scalar_type(),
               at::get_num_threads(),
               residual,
               residual ? e.residual_scale : 1.0,
               e.clip > 0 ? e.clip : 0.0};
}

}  // namespace

struct DirectConv2d::Primitive {
  Shape shape;
  dnnl::convolution_forward conv;
  memory::desc src_desc, dst_desc, weights_desc, scratchpad_desc;
};

struct DirectConv2d::Weights {
  memory::desc desc;
  memory data;
};

DirectConv2d::DirectConv2d() = default;
DirectConv2d::~DirectConv2d() = default;

bool DirectConv2d::Available() { return true; }
void DirectConv2d::SetEnabled(bool enabled) { EnabledFlag() = enabled; }
bool DirectConv2d::Enabled() { return EnabledFlag(); }

bool DirectConv2d::Supports(const torch::Tensor& x, const torch::Tensor& w, const ConvEpilogue& epilogue) {
  if (!Enabled() || torch::GradMode::is_enabled()) return false;
  const auto dtype = x.scalar_type();
  if (!x.is_cpu() || x.dim() != 4 || (dtype != torch::kFloat32 && dtype != torch::kBFloat16) ||
      !x.is_contiguous(torch::MemoryFormat::ChannelsLast) || x.numel() == 0)
    return false;
  if (!w.is_cpu() || w.dim() != 4 || w.scalar_type() != dtype || w.size(1) != x.size(1) || w.size(2) != w.size(3) ||
      w.size(2) % 2 == 0)
    return false;
  const torch::Tensor& r = epilogue.residual;
  if (!r.defined()) return true;
  return r.is_cpu() && r.scalar_type() == dtype && r.dim() == 4 && r.size(0) == x.size(0) && r.size(1) == w.size(0) &&
         r.size(2) == x.size(2) && r.size(3) == x.size(3) && r.is_contiguous(torch::MemoryFormat::ChannelsLast);
}

std::shared_ptr<const DirectConv2d::Primitive> DirectConv2d::FindOrMake(const torch::Tensor& x, const torch::Tensor& w,
                                                                        const ConvEpilogue& epilogue) {
  const Shape shape = ShapeOf(x, w, epilogue);
  for (const auto& p : primitives_)
    if (p->shape == shape) return p;

  const memory::data_type dt = DataType(x);
  const memory::dims src_dims = {shape.batch, shape.in_channels, shape.height, shape.width};
  const memory::dims dst_dims = {shape.batch, shape.out_channels, shape.height, shape.width};
  const memory::desc src(src_dims, dt, memory::format_tag::nhwc);
  const memory::desc dst(dst_dims, dt, memory::format_tag::nhwc);
  const memory::desc weights({shape.out_channels, shape.in_channels, shape.kernel, shape.kernel}, dt,
                             memory::format_tag::any);
  const memory::dim pad = shape.kernel / 2;
  const dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                             src, weights, dst, {1, 1}, {pad, pad}, {pad, pad});
  // The residual arrives in the output buffer (Run copies it there) and the
  // sum post-operation adds it scaled: oneDNN 2.6 keeps its brgemm kernels
  // for a sum, and falls back to slower ones for a binary add of a full tensor.
  dnnl::post_ops ops;
  if (shape.residual) ops.append_sum(static_cast<float>(shape.residual_scale));
  if (shape.clip > 0) {
    const float c = static_cast<float>(shape.clip);
    ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_clip, -c, c);
  }
  dnnl::primitive_attr attr;
  attr.set_post_ops(ops);
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const dnnl::convolution_forward::primitive_desc pd(desc, attr, CpuEngine());
  auto made = std::make_shared<Primitive>(
      Primitive{shape, dnnl::convolution_forward(pd), src, dst, pd.weights_desc(), pd.scratchpad_desc()});
  primitives_.push_back(made);
  return made;
}

torch::Tensor DirectConv2d::Run(const torch::Tensor& x, const torch::Tensor& w, const ConvEpilogue& epilogue) {
  RECORD_FUNCTION("tcm::direct_conv", std::vector<c10::IValue>{});  // named in tcm-model-bench --profile
  std::shared_ptr<const Primitive> primitive;
  std::shared_ptr<const Weights> weights;
  {
    std::lock_guard<std::mutex> lock(mu_);
    primitive = FindOrMake(x, w, epilogue);
    if (!weight_source_.is_same(w)) {
      weights_.clear();
      weight_source_ = w;
    }
    for (const auto& candidate : weights_)
      if (candidate->desc == primitive->weights_desc) weights = candidate;
    if (!weights) {
      const torch::Tensor source = w.contiguous(w.suggest_memory_format());
      memory::dims strides(source.strides().begin(), source.strides().end());
      memory user(memory::desc({w.size(0), w.size(1), w.size(2), w.size(3)}, DataType(w), strides), CpuEngine(),
                  source.data_ptr());
      memory reordered(primitive->weights_desc, CpuEngine());
      dnnl::reorder(user, reordered).execute(ThreadStream(), user, reordered);
      ThreadStream().wait();
      weights = std::make_shared<Weights>(Weights{primitive->weights_desc, reordered});
      weights_.push_back(weights);
    }
  }

  const Shape& s = primitive->shape;
  // The sum post-operation adds to what the output holds: the residual.
  torch::Tensor y;
  if (s.residual && epilogue.overwrite_residual && !epilogue.residual.is_alias_of(x)) {
    y = epilogue.residual;
  } else {
    y = torch::empty({s.batch, s.out_channels, s.height, s.width},
                     x.options().memory_format(torch::MemoryFormat::ChannelsLast));
    if (s.residual) std::memcpy(y.data_ptr(), epilogue.residual.data_ptr(), y.nbytes());  // same sizes and layout
  }
  torch::Tensor scratch = torch::empty({static_cast<int64_t>(primitive->scratchpad_desc.get_size())},
                                       torch::TensorOptions().dtype(torch::kUInt8));
  const memory src(primitive->src_desc, CpuEngine(), x.data_ptr());
  const memory dst(primitive->dst_desc, CpuEngine(), y.data_ptr());
  const memory scratchpad(primitive->scratchpad_desc, CpuEngine(), scratch.data_ptr());
  std::unordered_map<int, memory> args = {
      {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights->data}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratchpad}};
  primitive->conv.execute(ThreadStream(), args);
  ThreadStream().wait();
  return y;
}

}  // namespace tcm
