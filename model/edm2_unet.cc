#include "model/edm2_unet.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "model/batch_invariant.h"
#include "model/concat.h"
#include "model/derived_tensor.h"
#include "model/direct_conv.h"
#include "model/elementwise.h"
#include "model/resample.h"
#include "model/silu.h"

namespace tcm {
namespace {

// 1 / 0.596: the magnitude-preserving SiLU is silu(x) / 0.596 (EDM2 Eq. 81).
constexpr double kMpSiluGain = 1.0 / 0.596;
constexpr double kNormEps = 1e-4;

// Scales each slice along `dims` to unit RMS magnitude: x / (eps + |x| / sqrt(n)),
// with n the number of elements reduced over (EDM2's `normalize`).
torch::Tensor Normalize(const torch::Tensor& x, torch::IntArrayRef dims, double extra_scale = 1.0) {
  int64_t reduced = 1;
  for (int64_t d : dims) reduced *= x.size(d);
  torch::Tensor norm = torch::linalg_vector_norm(x, 2, dims, /*keepdim=*/true);
  norm = norm.mul(1.0 / std::sqrt(static_cast<double>(reduced))).add_(kNormEps);
  if (extra_scale != 1.0) norm = norm.mul_(1.0 / extra_scale);
  return x / norm;
}

std::vector<int64_t> AllButFirst(int64_t ndim) {
  std::vector<int64_t> dims;
  for (int64_t d = 1; d < ndim; ++d) dims.push_back(d);
  return dims;
}

// Balance weights of the magnitude-preserving sum lerp(a, b, t) / sqrt((1-t)^2 + t^2).
struct MpSumWeights {
  double a, b;
  explicit MpSumWeights(double t) {
    const double norm = std::sqrt((1 - t) * (1 - t) + t * t);
    a = (1 - t) / norm;
    b = t / norm;
  }
};

// Magnitude-preserving convolution (kernel {kh, kw}) or linear layer (kernel {}),
// with weight normalisation in the forward pass and forced weight
// normalisation of the stored weight in training mode.
class MPConvImpl : public torch::nn::Module {
 public:
  MPConvImpl(int64_t in_channels, int64_t out_channels, std::vector<int64_t> kernel) {
    std::vector<int64_t> shape = {out_channels, in_channels};
    shape.insert(shape.end(), kernel.begin(), kernel.end());
    weight = register_parameter("weight", torch::randn(shape));
    fan_in_ = in_channels;
    for (int64_t k : kernel) fan_in_ *= k;
  }

  // normalize(w) * gain / sqrt(fan_in) * scale; `gain` may be undefined (= 1).
  // `scale` folds constant factors of the surrounding code into the weight.
  torch::Tensor EffectiveWeight(const torch::Tensor& gain, double scale) {
    if (is_training() && !SkipForcedWeightNormalization::Active()) {
      torch::NoGradGuard no_grad;
      weight.copy_(Normalize(weight, AllButFirst(weight.dim())));
    }
    if (scale != cached_scale_) {  // each call site uses one fixed scale
      cache_.Reset();
      cached_scale_ = scale;
    }
    return cache_.Get({weight, gain.defined() ? gain : weight}, [&] {
      torch::Tensor w = Normalize(weight, AllButFirst(weight.dim()), scale / std::sqrt(double(fan_in_)));
      if (gain.defined()) w = w * gain;
      if (w.dim() != 4) return w;  // linear layers stay float32
      // In training the cast is part of the graph: gradients reach the
      // float32 weight (the master copy) in float32.
      return w.to(compute_dtype_).contiguous(memory_format_);
    });
  }

  // Convolutions (not linear layers) use their normalised weight in `dtype`
  // and `format`, cast from the float32 result.
  void SetCompute(torch::ScalarType dtype, torch::MemoryFormat format) {
    compute_dtype_ = dtype;
    memory_format_ = format;
    cache_.Reset();
  }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& gain = {}, double scale = 1.0) {
    torch::Tensor w = EffectiveWeight(gain, scale);
    if (w.dim() == 2) return RowWiseLinear(x, w);
    if (DirectConv2d::Supports(x, w, {})) return direct_->Run(x, w, {});
    return BatchInvariantConv2d(x, w, /*bias=*/{}, /*stride=*/1, /*padding=*/w.size(-1) / 2);
  }

  // A convolution's forward(x, {}, scale) followed by EDM2's residual sum:
  // clamp(conv + residual_scale * residual, -clip, clip), no clamp for
  // clip <= 0. On the direct path the sum runs inside the convolution, and
  // with `overwrite_residual` (the caller never reads `residual` again) in
  // the residual's memory.
  torch::Tensor ForwardWithResidual(const torch::Tensor& x, double scale, const torch::Tensor& residual,
                                    double residual_scale, double clip, bool overwrite_residual = false) {
    torch::Tensor w = EffectiveWeight({}, scale);
    const ConvEpilogue epilogue{residual, residual_scale, clip, overwrite_residual};
    if (DirectConv2d::Supports(x, w, epilogue)) return direct_->Run(x, w, epilogue);
    torch::Tensor y = forward(x, {}, scale);
    return AddScaledClamp_(y, residual, residual_scale, clip);
  }

  double Flops(int64_t pixels) const { return 2.0 * weight.size(0) * fan_in_ * pixels; }

  torch::Tensor weight;

 private:
  int64_t fan_in_ = 0;
  double cached_scale_ = 1.0;
  std::unique_ptr<DirectConv2d> direct_ = std::make_unique<DirectConv2d>();
  torch::ScalarType compute_dtype_ = torch::kFloat32;
  torch::MemoryFormat memory_format_ = torch::MemoryFormat::Contiguous;
  DerivedTensor cache_;
};
TORCH_MODULE(MPConv);

struct BlockOptions {
  int64_t in_channels, out_channels, emb_channels;
  bool decoder = false;  // 'dec' flavour (skip projection after the residual branch)
  ResampleMode resample = ResampleMode::kKeep;
  bool attention = false;
  int64_t resolution = 0;  // of the block's output
  const v1::Edm2UNetConfig* config = nullptr;
};

// U-Net encoder/decoder block with optional self-attention (EDM2 Figure 21).
// Constant factors (MP-SiLU gains, MP-sum balances, the attention scale) are
// folded into the cached effective weights.
class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(const BlockOptions& o) : o_(o), res_(o.config->res_balance()), attn_(o.config->attn_balance()) {
    const auto& c = *o.config;
    const std::vector<float> taps(c.resample_filter().begin(), c.resample_filter().end());
    resample_is_box_ = IsBoxFilter(taps);
    if (!resample_is_box_) resample_filter_ = ResampleFilter2d(taps);
    num_heads_ = o.attention ? o.out_channels / c.channels_per_head() : 0;
    emb_gain = register_parameter("emb_gain", torch::zeros({}));
    conv_res0 = register_module(
        "conv_res0", MPConv(o.decoder ? o.in_channels : o.out_channels, o.out_channels, std::vector<int64_t>{3, 3}));
    emb_linear = register_module("emb_linear", MPConv(o.emb_channels, o.out_channels, std::vector<int64_t>{}));
    conv_res1 = register_module("conv_res1", MPConv(o.out_channels, o.out_channels, std::vector<int64_t>{3, 3}));
    if (o.in_channels != o.out_channels)
      conv_skip = register_module("conv_skip", MPConv(o.in_channels, o.out_channels, std::vector<int64_t>{1, 1}));
    if (num_heads_ > 0) {
      attn_qkv = register_module("attn_qkv", MPConv(o.out_channels, o.out_channels * 3, std::vector<int64_t>{1, 1}));
      attn_proj = register_module("attn_proj", MPConv(o.out_channels, o.out_channels, std::vector<int64_t>{1, 1}));
    }
  }

  int64_t out_channels() const { return o_.out_channels; }

  // `silu_x`: Silu(x) where the caller made it together with x (a skip
  // connection's concatenation), else undefined.
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& emb, torch::Tensor silu_x = {}) {
    const c10::TensorImpl* const input = x.unsafeGetTensorImpl();
    if (o_.resample == ResampleMode::kUp && resample_is_box_ && !torch::GradMode::is_enabled()) {
      // Nearest-neighbour upsampling copies values, so the SiLU of the
      // upsampled x is the upsampled SiLU of x: taken on a quarter of the
      // pixels. (Training keeps the reference's order, and its gradients.)
      if (!silu_x.defined()) silu_x = Silu(x);
      silu_x = Resample(silu_x, resample_filter_, resample_is_box_, o_.resample);
      x = Resample(x, resample_filter_, resample_is_box_, o_.resample);
    } else if (o_.resample != ResampleMode::kKeep) {
      silu_x = torch::Tensor();
      x = Resample(x, resample_filter_, resample_is_box_, o_.resample);
    }
    if (!o_.decoder) {
      if (conv_skip) x = conv_skip(x);
      WithSilu normalised = PixelNormAndSilu(x, kNormEps);
      x = normalised.value;
      silu_x = normalised.silu;
    }
    if (!silu_x.defined()) silu_x = Silu(x);
    // Residual branch; mp_silu's 1/0.596 lives in conv_res0's and conv_res1's weights.
    torch::Tensor y = conv_res0->forward(silu_x, {}, kMpSiluGain);
    y = ScaledSilu_(y, emb_linear(emb, emb_gain).add_(1));
    if (is_training() && o_.config->dropout() > 0 && InDropoutResolution(x.size(-1)))
      y = torch::dropout(y, o_.config->dropout(), /*train=*/true);
    if (o_.decoder && conv_skip) x = conv_skip(x);
    // mp_sum(x, y, res_balance), then (after attention, where the block has
    // it) the clip to [-clip_act, clip_act].
    // A new x (resampled, projected or normalised here) is this block's
    // alone: the sum may overwrite it.
    const bool own_x = x.unsafeGetTensorImpl() != input;
    const double clip = o_.config->clip_act();
    const double scale = kMpSiluGain * res_.b;
    if (num_heads_ == 0) return conv_res1->ForwardWithResidual(y, scale, x, res_.a, clip, own_x);
    return Attention(conv_res1->ForwardWithResidual(y, scale, x, res_.a, /*clip=*/0, own_x), clip);
  }

  double Flops() const {
    const int64_t p = o_.resolution * o_.resolution;
    double f = conv_res0->Flops(p) + conv_res1->Flops(p) + emb_linear->Flops(1);
    if (conv_skip) f += conv_skip->Flops(p);
    if (num_heads_ > 0) f += attn_qkv->Flops(p) + attn_proj->Flops(p) + 2.0 * 2.0 * p * p * o_.out_channels;
    return f;
  }

  torch::Tensor emb_gain;
  MPConv conv_res0{nullptr}, emb_linear{nullptr}, conv_res1{nullptr}, conv_skip{nullptr};
  MPConv attn_qkv{nullptr}, attn_proj{nullptr};

 private:
  bool InDropoutResolution(int64_t res) const {
    const auto& r = o_.config->dout_resolutions();
    return std::find(r.begin(), r.end(), static_cast<uint32_t>(res)) != r.end();
  }

  // x + self-attention(x) as an mp_sum, clipped to [-clip, clip] (none for clip <= 0).
  torch::Tensor Attention(const torch::Tensor& x, double clip) {
    const int64_t n = x.size(0), hw = x.size(2) * x.size(3);
    // Channels run (head, channel, q/k/v): pixel norm per head and q, k, v.
    torch::Tensor y = PixelNorm(attn_qkv(x), kNormEps, num_heads_, 3).reshape({n, num_heads_, -1, 3, hw});
    const double head_dim = static_cast<double>(y.size(2));
    torch::Tensor q = y.select(3, 0), k = y.select(3, 1), v = y.select(3, 2);
    torch::Tensor w = torch::matmul(q.transpose(2, 3), k).mul_(1.0 / std::sqrt(head_dim)).softmax(3);
    y = torch::matmul(v, w.transpose(2, 3));  // [n, heads, c, q]
    return attn_proj->ForwardWithResidual(y.reshape(x.sizes()), attn_.b, x, attn_.a,
                                          clip);  // mp_sum(x, y, attn_balance)
  }

  BlockOptions o_;
  torch::Tensor resample_filter_;  // undefined for the box filter
  bool resample_is_box_ = true;
  MpSumWeights res_, attn_;
  int64_t num_heads_ = 0;
};
TORCH_MODULE(Block);

// Magnitude-preserving Fourier features of the noise level (EDM2 Eq. 75).
class MPFourierImpl : public torch::nn::Module {
 public:
  MPFourierImpl(int64_t channels, double scale, bool learnable) : learnable_(learnable) {
    freqs = register_buffer("freqs", 2 * M_PI * torch::randn({channels}) * (learnable ? 1.0 : scale));
    phases = register_buffer("phases", 2 * M_PI * torch::rand({channels}));
    if (learnable) this->scale = register_parameter("scale", torch::full({}, scale));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor f = learnable_ ? freqs_cache_.Get({freqs, scale}, [&] { return freqs * scale.exp(); }) : freqs;
    return torch::cos(torch::outer(x, f).add_(phases)).mul_(std::sqrt(2.0));
  }

  torch::Tensor freqs, phases, scale;

 private:
  bool learnable_;
  DerivedTensor freqs_cache_;
};
TORCH_MODULE(MPFourier);

class Edm2UNetImpl : public UNet {
 public:
  explicit Edm2UNetImpl(const v1::ModelConfig& config) : config_(config), c_(config_.edm2()) {
    std::vector<int64_t> cblock;
    for (uint32_t m : c_.channel_mult()) cblock.push_back(int64_t(c_.model_channels()) * m);
    const int64_t cnoise = c_.channel_mult_noise() ? int64_t(c_.model_channels()) * c_.channel_mult_noise() : cblock[0];
    const int64_t cemb = c_.channel_mult_emb() ? int64_t(c_.model_channels()) * c_.channel_mult_emb()
                                               : *std::max_element(cblock.begin(), cblock.end());
    const int64_t label_dim = config_.num_classes();
    const int64_t img_res = config_.img_resolution();
    auto has_attention = [&](int64_t res) {
      const auto& a = c_.attn_resolutions();
      return std::find(a.begin(), a.end(), static_cast<uint32_t>(res)) != a.end();
    };
    auto block = [&](int64_t cin, int64_t cout, bool decoder, ResampleMode mode, bool attention, int64_t res) {
      return Block(BlockOptions{cin, cout, cemb, decoder, mode, attention, res, &c_});
    };

    out_gain = register_parameter("out_gain", torch::zeros({}));
    emb_fourier = register_module("emb_fourier", MPFourier(cnoise, c_.fourier_scale(), c_.learnable_scale()));
    emb_noise = register_module("emb_noise", MPConv(cnoise, cemb, std::vector<int64_t>{}));
    if (label_dim > 0) emb_label = register_module("emb_label", MPConv(label_dim, cemb, std::vector<int64_t>{}));

    auto enc = register_module("enc", torch::nn::ModuleDict());
    std::vector<int64_t> skips;
    int64_t cout = config_.img_channels() + 1;
    for (size_t level = 0; level < cblock.size(); ++level) {
      const int64_t res = img_res >> level;
      const std::string prefix = std::to_string(res) + "x" + std::to_string(res);
      if (level == 0) {
        const int64_t cin = cout;
        cout = cblock[level];
        enc_conv_ = MPConv(cin, cout, std::vector<int64_t>{3, 3});
        enc->update({{prefix + "_conv", enc_conv_.ptr()}});
        enc_conv_flops_ = enc_conv_->Flops(res * res);
      } else {
        Block b = block(cout, cout, false, ResampleMode::kDown, false, res);
        enc->update({{prefix + "_down", b.ptr()}});
        enc_blocks_.push_back(b);
      }
      skips.push_back(cout);
      for (uint32_t idx = 0; idx < c_.num_blocks(); ++idx) {
        const int64_t cin = cout;
        cout = cblock[level];
        Block b = block(cin, cout, false, ResampleMode::kKeep, has_attention(res), res);
        enc->update({{prefix + "_block" + std::to_string(idx), b.ptr()}});
        enc_blocks_.push_back(b);
        skips.push_back(cout);
      }
    }

    auto dec = register_module("dec", torch::nn::ModuleDict());
    for (int64_t level = int64_t(cblock.size()) - 1; level >= 0; --level) {
      const int64_t res = img_res >> level;
      const std::string prefix = std::to_string(res) + "x" + std::to_string(res);
      if (level == int64_t(cblock.size()) - 1) {
        Block in0 = block(cout, cout, true, ResampleMode::kKeep, true, res);
        Block in1 = block(cout, cout, true, ResampleMode::kKeep, false, res);
        dec->update({{prefix + "_in0", in0.ptr()}, {prefix + "_in1", in1.ptr()}});
        dec_blocks_.push_back({in0, false});
        dec_blocks_.push_back({in1, false});
      } else {
        Block up = block(cout, cout, true, ResampleMode::kUp, false, res);
        dec->update({{prefix + "_up", up.ptr()}});
        dec_blocks_.push_back({up, false});
      }
      for (uint32_t idx = 0; idx <= c_.num_blocks(); ++idx) {
        const int64_t cin = cout + skips.back();
        skips.pop_back();
        cout = cblock[level];
        Block b = block(cin, cout, true, ResampleMode::kKeep, has_attention(res), res);
        dec->update({{prefix + "_block" + std::to_string(idx), b.ptr()}});
        dec_blocks_.push_back({b, true});
      }
    }
    out_conv = register_module("out_conv", MPConv(cout, config_.img_channels(), std::vector<int64_t>{3, 3}));
    out_conv_flops_ = out_conv->Flops(img_res * img_res);
    const MpSumWeights label(c_.label_balance());
    label_weights_ = {label.a, label.b};
  }

  torch::Tensor Forward(const torch::Tensor& x_in, const torch::Tensor& noise_labels,
                        const torch::Tensor& class_onehot) override {
    // Embedding: mp_sum(noise, label) with its balance and the label's
    // sqrt(num_classes) input scale folded into the two weights.
    // Without labels a conditional network sees a zero label vector, as in the reference.
    const bool conditional = static_cast<bool>(emb_label);
    torch::Tensor emb = emb_noise->forward(emb_fourier(noise_labels), {}, conditional ? label_weights_.first : 1.0);
    if (conditional && class_onehot.defined()) {
      const double label_scale = std::sqrt(double(class_onehot.size(1))) * label_weights_.second;
      emb = emb.add_(emb_label->forward(class_onehot, {}, label_scale));
    }
    emb = Silu(emb).mul_(kMpSiluGain);
    if (c_.emb_norm()) emb = Normalize(emb, {1});

    torch::Tensor x = torch::cat({x_in, torch::ones_like(x_in.narrow(1, 0, 1))}, 1);
    std::vector<torch::Tensor> skips;
    skips.reserve(enc_blocks_.size() + 1);
    x = enc_conv_(x);
    skips.push_back(x);
    for (auto& b : enc_blocks_) {
      x = b(x, emb);
      skips.push_back(x);
    }
    for (auto& [b, takes_skip] : dec_blocks_) {
      if (!takes_skip) {
        x = b(x, emb);
        continue;
      }
      WithSilu joined = MpCatAndSilu(x, skips.back());  // the block's first step is the SiLU of the join
      skips.pop_back();
      x = b(joined.value, emb, joined.silu);
    }
    return out_conv(x, out_gain);
  }

  void SetCompute(torch::ScalarType dtype, bool channels_last) override {
    compute_dtype_ = dtype;
    memory_format_ = channels_last ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous;
    for (const auto& m : modules(/*include_self=*/false))
      if (auto* conv = dynamic_cast<MPConvImpl*>(m.get())) conv->SetCompute(dtype, memory_format_);
  }

  void PrepareForInference() override {
    torch::NoGradGuard no_grad;
    const int64_t res = config_.img_resolution();
    const torch::Device device = out_gain.device();  // where the module is: the caches are computed there
    torch::Tensor x = torch::zeros({1, int64_t(config_.img_channels()), res, res},
                                   torch::TensorOptions().dtype(compute_dtype_).device(device))
                          .contiguous(memory_format_);
    torch::Tensor labels =
        config_.num_classes() ? torch::zeros({1, int64_t(config_.num_classes())}, device) : torch::Tensor();
    Forward(x, torch::zeros({1}, device), labels);  // fills every cache
  }

  double FlopsPerImage() const override {
    double f = enc_conv_flops_ + out_conv_flops_;
    for (const auto& b : enc_blocks_) f += b->Flops();
    for (const auto& [b, unused] : dec_blocks_) f += b->Flops();
    return f;
  }

  torch::Tensor out_gain;
  MPFourier emb_fourier{nullptr};
  MPConv emb_noise{nullptr}, emb_label{nullptr}, out_conv{nullptr};

 private:
  // Magnitude-preserving concatenation along channels (EDM2 Eq. 103), and its SiLU.
  WithSilu MpCatAndSilu(const torch::Tensor& a, const torch::Tensor& b) const {
    const double t = c_.concat_balance();
    const double na = a.size(1), nb = b.size(1);
    const double c = std::sqrt((na + nb) / ((1 - t) * (1 - t) + t * t));
    return ScaledCatAndSilu(a, c / std::sqrt(na) * (1 - t), b, c / std::sqrt(nb) * t);
  }

  v1::ModelConfig config_;
  const v1::Edm2UNetConfig& c_;
  torch::ScalarType compute_dtype_ = torch::kFloat32;
  torch::MemoryFormat memory_format_ = torch::MemoryFormat::Contiguous;
  MPConv enc_conv_{nullptr};
  std::vector<Block> enc_blocks_;
  std::vector<std::pair<Block, bool>> dec_blocks_;  // block, takes a skip connection
  std::pair<double, double> label_weights_;
  double enc_conv_flops_ = 0, out_conv_flops_ = 0;
};

}  // namespace

std::shared_ptr<UNet> MakeEdm2UNet(const v1::ModelConfig& config) { return std::make_shared<Edm2UNetImpl>(config); }

}  // namespace tcm
