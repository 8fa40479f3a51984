#include "model/song_unet.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "model/batch_invariant.h"
#include "model/concat.h"
#include "model/resample.h"
#include "model/silu.h"

namespace tcm {
namespace {

// EDM's `normalize` (unit RMS over all but the batch dimension, eps 1e-4).
torch::Tensor NormalizeRows(const torch::Tensor& x) {
  std::vector<int64_t> dims;
  for (int64_t d = 1; d < x.dim(); ++d) dims.push_back(d);
  const double n = static_cast<double>(x.numel() / std::max<int64_t>(x.size(0), 1));
  torch::Tensor norm = torch::linalg_vector_norm(x, 2, dims, /*keepdim=*/true);
  return x / norm.mul(1.0 / std::sqrt(n)).add_(1e-4);
}

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in, int64_t out, bool bias = true) {
    const double bound = std::sqrt(6.0 / double(in + out));  // xavier_uniform, as the reference
    weight = register_parameter("weight", torch::empty({out, in}).uniform_(-bound, bound));
    if (bias) this->bias = register_parameter("bias", torch::zeros({out}));
  }
  torch::Tensor forward(const torch::Tensor& x) { return RowWiseLinear(x, weight, bias); }
  double Flops() const { return 2.0 * weight.numel(); }
  torch::Tensor weight, bias;
};
TORCH_MODULE(Linear);

struct ConvOptions {
  int64_t in_channels, out_channels, kernel;  // kernel 0 = resample only
  bool bias = true;
  ResampleMode resample = ResampleMode::kKeep;
  bool fused_resample = false;
  std::vector<float> taps = {1, 1};
  double init_weight = 1.0;
};

// Convolution with optional 2x up/downsampling (EDM's `Conv2d`).
class Conv2dImpl : public torch::nn::Module {
 public:
  explicit Conv2dImpl(const ConvOptions& o) : o_(o) {
    const int64_t k = o.kernel;
    if (k > 0) {
      const double bound = std::sqrt(6.0 / double((o.in_channels + o.out_channels) * k * k)) * o.init_weight;
      weight =
          register_parameter("weight", torch::empty({o.out_channels, o.in_channels, k, k}).uniform_(-bound, bound));
      if (o.bias) bias = register_parameter("bias", torch::zeros({o.out_channels}));
    }
    if (o.resample != ResampleMode::kKeep) {
      resample_filter = register_buffer("resample_filter", ResampleFilter2d(o.taps));
      is_box_ = IsBoxFilter(o.taps);
    }
  }

  torch::Tensor forward(torch::Tensor x) {
    const int64_t w_pad = weight.defined() ? weight.size(-1) / 2 : 0;
    const int64_t f_pad = resample_filter.defined() ? (resample_filter.size(-1) - 1) / 2 : 0;
    if (o_.fused_resample && o_.resample == ResampleMode::kUp && weight.defined()) {
      x = torch::conv_transpose2d(x, resample_filter.mul(4).tile({o_.in_channels, 1, 1, 1}), {}, 2,
                                  std::max<int64_t>(f_pad - w_pad, 0), 0, o_.in_channels);
      x = BatchInvariantConv2d(x, weight, {}, 1, std::max<int64_t>(w_pad - f_pad, 0));
    } else if (o_.fused_resample && o_.resample == ResampleMode::kDown && weight.defined()) {
      x = BatchInvariantConv2d(x, weight, {}, 1, w_pad + f_pad);
      x = torch::conv2d(x, resample_filter.tile({o_.out_channels, 1, 1, 1}), torch::Tensor(),
                        /*stride=*/torch::IntArrayRef{2}, /*padding=*/torch::IntArrayRef{0},
                        /*dilation=*/torch::IntArrayRef{1}, o_.out_channels);
    } else {
      x = Resample(x, resample_filter, is_box_, o_.resample);
      if (weight.defined()) x = BatchInvariantConv2d(x, weight, {}, 1, w_pad);
    }
    if (bias.defined()) x = x.add_(bias.reshape({1, -1, 1, 1}));
    return x;
  }

  // Call after loading weights: the box fast path stays only while the loaded
  // filter is the box filter the configuration implies.
  void CheckResampleFilter() {
    if (resample_filter.defined())
      is_box_ =
          IsBoxFilter(o_.taps) && torch::equal(resample_filter, ResampleFilter2d(o_.taps).to(resample_filter.device()));
  }

  double Flops(int64_t out_pixels) const { return weight.defined() ? 2.0 * weight.numel() * out_pixels : 0.0; }

  torch::Tensor weight, bias, resample_filter;

 private:
  ConvOptions o_;
  bool is_box_ = false;
};
TORCH_MODULE(Conv2d);

class GroupNormImpl : public torch::nn::Module {
 public:
  GroupNormImpl(int64_t channels, double eps) : groups_(std::min<int64_t>(32, channels / 4)), eps_(eps) {
    weight = register_parameter("weight", torch::ones({channels}));
    bias = register_parameter("bias", torch::zeros({channels}));
  }
  torch::Tensor forward(const torch::Tensor& x) { return BatchInvariantGroupNorm(x, groups_, weight, bias, eps_); }
  torch::Tensor weight, bias;

 private:
  int64_t groups_;
  double eps_;
};
TORCH_MODULE(GroupNorm);

struct BlockOptions {
  int64_t in_channels, out_channels, emb_channels;
  ResampleMode resample = ResampleMode::kKeep;
  bool attention = false;
  int64_t resolution = 0;  // of the block's output
  const v1::SongUNetConfig* config = nullptr;
};

// EDM's `UNetBlock` in its DDPM++ setting: one attention head, skip scale
// sqrt(1/2), eps 1e-6, 1x1 resampling skip projection, additive embedding.
class UNetBlockImpl : public torch::nn::Module {
 public:
  explicit UNetBlockImpl(const BlockOptions& o) : o_(o) {
    const std::vector<float> taps(o.config->resample_filter().begin(), o.config->resample_filter().end());
    const double init_zero = 1e-5, init_attn = std::sqrt(0.2);
    norm0 = register_module("norm0", GroupNorm(o.in_channels, kEps));
    conv0 =
        register_module("conv0", Conv2d(ConvOptions{o.in_channels, o.out_channels, 3, true, o.resample, false, taps}));
    affine = register_module("affine", Linear(o.emb_channels, o.out_channels));
    norm1 = register_module("norm1", GroupNorm(o.out_channels, kEps));
    conv1 = register_module("conv1", Conv2d(ConvOptions{o.out_channels, o.out_channels, 3, true, ResampleMode::kKeep,
                                                        false, taps, init_zero}));
    if (o.out_channels != o.in_channels || o.resample != ResampleMode::kKeep)
      skip =
          register_module("skip", Conv2d(ConvOptions{o.in_channels, o.out_channels, 1, true, o.resample, false, taps}));
    if (o.attention) {
      norm2 = register_module("norm2", GroupNorm(o.out_channels, kEps));
      qkv = register_module("qkv", Conv2d(ConvOptions{o.out_channels, o.out_channels * 3, 1, true, ResampleMode::kKeep,
                                                      false, taps, init_attn}));
      proj = register_module("proj", Conv2d(ConvOptions{o.out_channels, o.out_channels, 1, true, ResampleMode::kKeep,
                                                        false, taps, init_zero}));
    }
  }

  int64_t in_channels() const { return o_.in_channels; }

  torch::Tensor forward(const torch::Tensor& orig, const torch::Tensor& emb) {
    torch::Tensor x = conv0(Silu(norm0(orig)));
    torch::Tensor params = affine(emb).unsqueeze(2).unsqueeze(3);
    if (o_.config->emb_norm()) params = NormalizeRows(params);
    x = Silu(norm1(x.add_(params)));
    if (is_training() && o_.config->dropout() > 0) x = torch::dropout(x, o_.config->dropout(), true);
    x = conv1(x);
    x = x.add_(skip ? skip(orig) : orig).mul_(kSkipScale);
    if (o_.attention) {
      const int64_t n = x.size(0), c = x.size(1);
      torch::Tensor y = qkv(norm2(x)).reshape({n, c, 3, -1});
      torch::Tensor q = y.select(2, 0), k = y.select(2, 1), v = y.select(2, 2);
      torch::Tensor w = torch::matmul(q.transpose(1, 2), k).mul_(1.0 / std::sqrt(double(c))).softmax(2);
      torch::Tensor a = torch::matmul(v, w.transpose(1, 2));  // [n, c, q]
      x = proj(a.reshape(x.sizes())).add_(x).mul_(kSkipScale);
    }
    return x;
  }

  void CheckResampleFilters() {
    conv0->CheckResampleFilter();
    if (skip) skip->CheckResampleFilter();
  }

  double Flops() const {
    const int64_t p = o_.resolution * o_.resolution;
    double f = conv0->Flops(p) + conv1->Flops(p) + affine->Flops();
    if (skip) f += skip->Flops(p);
    if (o_.attention) f += qkv->Flops(p) + proj->Flops(p) + 4.0 * p * p * o_.out_channels;
    return f;
  }

  GroupNorm norm0{nullptr}, norm1{nullptr}, norm2{nullptr};
  Conv2d conv0{nullptr}, conv1{nullptr}, skip{nullptr}, qkv{nullptr}, proj{nullptr};
  Linear affine{nullptr};

 private:
  static constexpr double kEps = 1e-6;
  static constexpr double kSkipScale = 0.70710678118654752440;  // sqrt(0.5)
  BlockOptions o_;
};
TORCH_MODULE(UNetBlock);

class FourierEmbeddingImpl : public torch::nn::Module {
 public:
  FourierEmbeddingImpl(int64_t channels, double scale, bool learnable) : learnable_(learnable) {
    freqs = register_buffer("freqs", torch::randn({channels / 2}) * (learnable ? 1.0 : scale));
    if (learnable) this->scale = register_parameter("scale", torch::full({}, scale));
  }
  // Returns [sin, cos] halves (the reference's cos/sin output with its halves swapped).
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor f = learnable_ ? freqs * scale * 10 : freqs;
    torch::Tensor arg = torch::outer(x, f.mul(2 * M_PI));
    return torch::cat({arg.sin(), arg.cos()}, 1);
  }
  torch::Tensor freqs, scale;

 private:
  bool learnable_;
};
TORCH_MODULE(FourierEmbedding);

class SongUNetImpl : public UNet {
 public:
  explicit SongUNetImpl(const v1::ModelConfig& config) : config_(config), c_(config_.song()) {
    const int64_t mc = c_.model_channels();
    const int64_t emb_channels = mc * c_.channel_mult_emb();
    const int64_t noise_channels = mc * c_.channel_mult_noise();
    const int64_t img_res = config_.img_resolution();
    const int64_t img_channels = config_.img_channels();
    const std::vector<float> taps(c_.resample_filter().begin(), c_.resample_filter().end());
    auto has_attention = [&](int64_t res) {
      const auto& a = c_.attn_resolutions();
      return std::find(a.begin(), a.end(), static_cast<uint32_t>(res)) != a.end();
    };
    auto block = [&](int64_t cin, int64_t cout, ResampleMode mode, bool attention, int64_t res) {
      return UNetBlock(BlockOptions{cin, cout, emb_channels, mode, attention, res, &c_});
    };
    auto conv = [&](int64_t cin, int64_t cout, int64_t k, ResampleMode mode = ResampleMode::kKeep, bool fused = false,
                    double init_weight = 1.0) {
      return Conv2d(ConvOptions{cin, cout, k, true, mode, fused, taps, init_weight});
    };

    // Mapping.
    if (c_.embedding_type() == "positional") {
      // DDPM++ positional embedding, endpoint=True: freqs = (1/10000)^(i / (n/2 - 1)).
      const int64_t half = noise_channels / 2;
      positional_freqs_ = torch::pow(1.0 / 10000.0, torch::arange(half, torch::kFloat32) / double(half - 1));
    } else {
      map_noise =
          register_module("map_noise", FourierEmbedding(noise_channels, c_.fourier_scale(), c_.learnable_scale()));
    }
    if (config_.num_classes() > 0)
      map_label = register_module("map_label", Linear(config_.num_classes(), noise_channels));
    if (c_.augment_dim() > 0)
      map_augment = register_module("map_augment", Linear(c_.augment_dim(), noise_channels, false));
    map_layer0 = register_module("map_layer0", Linear(noise_channels, emb_channels));
    map_layer1 = register_module("map_layer1", Linear(emb_channels, emb_channels));

    // Encoder.
    auto enc = register_module("enc", torch::nn::ModuleDict());
    int64_t cout = img_channels, caux = img_channels;
    std::vector<int64_t> skips;
    for (int level = 0; level < c_.channel_mult_size(); ++level) {
      const int64_t res = img_res >> level;
      const std::string prefix = std::to_string(res) + "x" + std::to_string(res);
      if (level == 0) {
        const int64_t cin = cout;
        cout = mc;
        Conv2d first = conv(cin, cout, 3);
        enc->update({{prefix + "_conv", first.ptr()}});
        enc_steps_.push_back({EncStep::kConv, first, nullptr});
        skips.push_back(cout);
        flops_ += first->Flops(res * res);
      } else {
        UNetBlock down = block(cout, cout, ResampleMode::kDown, false, res);
        enc->update({{prefix + "_down", down.ptr()}});
        enc_steps_.push_back({EncStep::kBlock, nullptr, down});
        skips.push_back(cout);
        if (c_.encoder_type() == "skip") {
          Conv2d aux_down = conv(caux, caux, 0, ResampleMode::kDown);
          Conv2d aux_skip = conv(caux, cout, 1);
          enc->update({{prefix + "_aux_down", aux_down.ptr()}, {prefix + "_aux_skip", aux_skip.ptr()}});
          enc_steps_.push_back({EncStep::kAuxDown, aux_down, nullptr});
          enc_steps_.push_back({EncStep::kAuxSkip, aux_skip, nullptr});
          flops_ += aux_skip->Flops(res * res);
        } else if (c_.encoder_type() == "residual") {
          Conv2d aux_res = conv(caux, cout, 3, ResampleMode::kDown, /*fused=*/true);
          enc->update({{prefix + "_aux_residual", aux_res.ptr()}});
          enc_steps_.push_back({EncStep::kAuxResidual, aux_res, nullptr});
          caux = cout;
          flops_ += aux_res->Flops(4 * res * res);
        }
      }
      for (uint32_t idx = 0; idx < c_.num_blocks(); ++idx) {
        const int64_t cin = cout;
        cout = mc * c_.channel_mult(level);
        UNetBlock b = block(cin, cout, ResampleMode::kKeep, has_attention(res), res);
        enc->update({{prefix + "_block" + std::to_string(idx), b.ptr()}});
        enc_steps_.push_back({EncStep::kBlock, nullptr, b});
        skips.push_back(cout);
      }
    }

    // Decoder.
    auto dec = register_module("dec", torch::nn::ModuleDict());
    const int levels = c_.channel_mult_size();
    for (int level = levels - 1; level >= 0; --level) {
      const int64_t res = img_res >> level;
      const std::string prefix = std::to_string(res) + "x" + std::to_string(res);
      if (level == levels - 1) {
        UNetBlock in0 = block(cout, cout, ResampleMode::kKeep, true, res);
        UNetBlock in1 = block(cout, cout, ResampleMode::kKeep, false, res);
        dec->update({{prefix + "_in0", in0.ptr()}, {prefix + "_in1", in1.ptr()}});
        dec_steps_.push_back({DecStep::kBlock, nullptr, in0, nullptr});
        dec_steps_.push_back({DecStep::kBlock, nullptr, in1, nullptr});
      } else {
        UNetBlock up = block(cout, cout, ResampleMode::kUp, false, res);
        dec->update({{prefix + "_up", up.ptr()}});
        dec_steps_.push_back({DecStep::kBlock, nullptr, up, nullptr});
      }
      for (uint32_t idx = 0; idx <= c_.num_blocks(); ++idx) {
        const int64_t cin = cout + skips.back();
        skips.pop_back();
        cout = mc * c_.channel_mult(level);
        const bool attention = idx == c_.num_blocks() && has_attention(res);
        UNetBlock b = block(cin, cout, ResampleMode::kKeep, attention, res);
        dec->update({{prefix + "_block" + std::to_string(idx), b.ptr()}});
        dec_steps_.push_back({DecStep::kBlockWithSkip, nullptr, b, nullptr});
      }
      if (c_.decoder_type() == "skip" || level == 0) {
        if (c_.decoder_type() == "skip" && level < levels - 1) {
          Conv2d aux_up = conv(img_channels, img_channels, 0, ResampleMode::kUp);
          dec->update({{prefix + "_aux_up", aux_up.ptr()}});
          dec_steps_.push_back({DecStep::kAuxUp, aux_up, nullptr, nullptr});
        }
        GroupNorm aux_norm(cout, 1e-6);
        Conv2d aux_conv = conv(cout, img_channels, 3, ResampleMode::kKeep, false, 1e-5);
        dec->update({{prefix + "_aux_norm", aux_norm.ptr()}, {prefix + "_aux_conv", aux_conv.ptr()}});
        dec_steps_.push_back({DecStep::kAuxNorm, nullptr, nullptr, aux_norm});
        dec_steps_.push_back({DecStep::kAuxConv, aux_conv, nullptr, nullptr});
        flops_ += aux_conv->Flops(res * res);
      }
    }
    for (const auto& s : enc_steps_)
      if (s.block) flops_ += s.block->Flops();
    for (const auto& s : dec_steps_)
      if (s.block) flops_ += s.block->Flops();
    flops_ += map_layer0->Flops() + map_layer1->Flops() + (map_label ? map_label->Flops() : 0.0);
  }

  torch::Tensor Forward(const torch::Tensor& x_in, const torch::Tensor& noise_labels,
                        const torch::Tensor& class_onehot) override {
    const bool emb_norm = c_.emb_norm();
    torch::Tensor emb;
    if (map_noise) {
      emb = map_noise(noise_labels);
    } else {
      torch::Tensor arg = torch::outer(noise_labels, positional_freqs_);
      emb = torch::cat({arg.sin(), arg.cos()}, 1);  // reference: [cos, sin], then halves swapped
    }
    if (emb_norm) emb = NormalizeRows(emb);
    if (map_label && class_onehot.defined())
      emb = emb + map_label(class_onehot * std::sqrt(double(class_onehot.size(1))));
    else if (map_label)  // the reference feeds a zero label vector: only the bias remains
      emb = emb + map_label->bias;
    emb = Silu(map_layer0(emb));
    if (emb_norm) emb = NormalizeRows(emb);
    emb = Silu(map_layer1(emb));
    if (emb_norm) emb = NormalizeRows(emb);
    emb = emb.to(compute_dtype_);  // the mapping network runs in float32, the blocks in the compute dtype

    std::vector<torch::Tensor> skips;
    torch::Tensor x = x_in, aux = x_in;
    for (auto& s : enc_steps_) {
      switch (s.kind) {
        case EncStep::kAuxDown:
          aux = s.conv(aux);
          break;
        case EncStep::kAuxSkip:
          x = skips.back() = x + s.conv(aux);
          break;
        case EncStep::kAuxResidual:
          x = skips.back() = aux = (x + s.conv(aux)) / std::sqrt(2.0);
          break;
        case EncStep::kConv:
          x = s.conv(x);
          skips.push_back(x);
          break;
        case EncStep::kBlock:
          x = s.block(x, emb);
          skips.push_back(x);
          break;
      }
    }
    torch::Tensor out, tmp;
    for (auto& s : dec_steps_) {
      switch (s.kind) {
        case DecStep::kAuxUp:
          out = s.conv(out);
          break;
        case DecStep::kAuxNorm:
          tmp = s.norm(x);
          break;
        case DecStep::kAuxConv:
          tmp = s.conv(Silu(tmp));
          out = out.defined() ? tmp + out : tmp;
          break;
        case DecStep::kBlockWithSkip:
          x = ScaledCat(x, 1.0, skips.back(), 1.0);
          skips.pop_back();
          x = s.block(x, emb);
          break;
        case DecStep::kBlock:
          x = s.block(x, emb);
          break;
      }
    }
    return out;
  }

  void SetCompute(torch::ScalarType dtype, bool channels_last) override {
    torch::NoGradGuard no_grad;
    to(dtype);
    auto module_of = [](const auto& holder) -> torch::nn::Module* {
      return holder.is_empty() ? nullptr : holder.ptr().get();
    };
    for (torch::nn::Module* mapping : {module_of(map_noise), module_of(map_label), module_of(map_augment),
                                       module_of(map_layer0), module_of(map_layer1)})
      if (mapping != nullptr) mapping->to(torch::kFloat32);
    const auto format = channels_last ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous;
    for (auto& p : parameters())
      if (p.dim() == 4) p.set_data(p.contiguous(format));
    compute_dtype_ = dtype;
  }

  void PrepareForInference() override {
    // The positional table is no buffer (no state_dict key): it follows the module here.
    if (positional_freqs_.defined()) positional_freqs_ = positional_freqs_.to(map_layer0->weight.device());
    for (auto& s : enc_steps_)
      if (s.block) s.block->CheckResampleFilters();
    for (auto& s : dec_steps_)
      if (s.block) s.block->CheckResampleFilters();
  }

  double FlopsPerImage() const override { return flops_; }

  FourierEmbedding map_noise{nullptr};
  Linear map_label{nullptr}, map_augment{nullptr}, map_layer0{nullptr}, map_layer1{nullptr};

 private:
  struct EncStep {
    enum Kind { kConv, kBlock, kAuxDown, kAuxSkip, kAuxResidual } kind;
    Conv2d conv;
    UNetBlock block;
  };
  struct DecStep {
    enum Kind { kBlock, kBlockWithSkip, kAuxUp, kAuxNorm, kAuxConv } kind;
    Conv2d conv;
    UNetBlock block;
    GroupNorm norm;
  };

  v1::ModelConfig config_;
  const v1::SongUNetConfig& c_;
  torch::Tensor positional_freqs_;  // constant frequency table of the positional embedding
  torch::ScalarType compute_dtype_ = torch::kFloat32;
  std::vector<EncStep> enc_steps_;
  std::vector<DecStep> dec_steps_;
  double flops_ = 0;
};

}  // namespace

std::shared_ptr<UNet> MakeSongUNet(const v1::ModelConfig& config) { return std::make_shared<SongUNetImpl>(config); }

}  // namespace tcm
