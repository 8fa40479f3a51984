#include "model/denoiser.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/edm2_unet.h"
#include "model/model_config.h"
#include "model/song_unet.h"
#include "model/torch_error.h"

namespace tcm {
namespace {

std::string ShapeString(torch::IntArrayRef shape) { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

}  // namespace

Denoiser::Denoiser(v1::ModelConfig config) : config_(std::move(config)) {}

absl::StatusOr<std::shared_ptr<Denoiser>> Denoiser::Create(const v1::ModelConfig& config) {
  std::shared_ptr<Denoiser> d(new Denoiser(config));
  try {
    if (config.architecture() == kEdm2UNet) {
      d->net_ = MakeEdm2UNet(d->config_);
    } else if (config.architecture() == kSongUNet) {
      d->net_ = MakeSongUNet(d->config_);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("architecture: must be \"EDM2UNet\" or \"SongUNet\", got \"", config.architecture(), "\""));
    }
    d->register_module("model", d->net_);
    if (config.has_transition_t()) {
      v1::ModelConfig single = config;
      single.clear_transition_t();
      auto below = Create(single);
      if (!below.ok()) return below.status();
      d->below_transition_ = *below;
      d->register_module("below_transition", d->below_transition_);
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("building the network failed: ", ExceptionMessage(e)));
  }
  return d;
}

torch::Tensor Denoiser::forward(const torch::Tensor& x, const torch::Tensor& sigma, const torch::Tensor& class_labels) {
  // Shards of at least two rows: a shard of one beside one of two leaves a
  // thread idle for a third of the pass, where splitting each operation does not.
  const int shards = at::get_num_threads();
  const auto one_per_row = [&](const torch::Tensor& t) { return t.dim() == 1 && t.size(0) == x.size(0); };
  if (!row_shards_ || shards < 2 || x.dim() == 0 || x.size(0) < 2 * shards || !x.is_cpu() ||
      torch::GradMode::is_enabled() || !one_per_row(sigma) || (class_labels.defined() && !one_per_row(class_labels)))
    return ForwardRows(x, sigma, class_labels);
  ++sharded_passes_;
  std::vector<torch::Tensor> outputs(shards);
  if (!shard_pool_) shard_pool_ = std::make_unique<RowShardPool>();
  shard_pool_->Run(x.size(0), shards, [&](int shard, int64_t begin, int64_t end) {
    outputs[shard] = ForwardRows(x.slice(0, begin, end), sigma.slice(0, begin, end),
                                 class_labels.defined() ? class_labels.slice(0, begin, end) : class_labels);
  });
  return torch::cat(outputs);
}

torch::Tensor Denoiser::ForwardRows(const torch::Tensor& x, const torch::Tensor& sigma,
                                    const torch::Tensor& class_labels) {
  if (!below_transition_) return ForwardOne(x, sigma, class_labels);
  const torch::Tensor below = sigma.to(torch::kFloat32) < config_.transition_t();
  const int64_t n_below = below.sum().item<int64_t>();
  if (n_below == 0) return ForwardOne(x, sigma, class_labels);
  if (n_below == x.size(0)) return below_transition_->forward(x, sigma, class_labels);
  // A mixed batch: each network computes its own rows.
  auto part = [&](const torch::Tensor& rows, Denoiser& d) {
    return d.ForwardOne(x.index_select(0, rows), sigma.index_select(0, rows),
                        class_labels.defined() ? class_labels.index_select(0, rows) : class_labels);
  };
  const torch::Tensor rows_below = below.nonzero().flatten(), rows_above = below.logical_not().nonzero().flatten();
  const torch::Tensor out_above = part(rows_above, *this);
  torch::Tensor out =
      torch::empty({x.size(0), out_above.size(1), out_above.size(2), out_above.size(3)}, out_above.options());
  out.index_copy_(0, rows_above, out_above);
  out.index_copy_(0, rows_below, part(rows_below, *below_transition_));
  return out;
}

torch::Tensor Denoiser::ForwardOne(const torch::Tensor& x_in, const torch::Tensor& sigma_in,
                                   const torch::Tensor& class_labels) {
  const torch::Tensor x = x_in.to(torch::kFloat32);
  const torch::Tensor sigma = sigma_in.to(torch::kFloat32).reshape({-1, 1, 1, 1});
  const double sd = config_.sigma_data();
  torch::Tensor onehot;
  if (config_.num_classes() > 0 && class_labels.defined())
    onehot = torch::one_hot(class_labels.to(torch::kInt64), config_.num_classes()).to(torch::kFloat32);

  const torch::Tensor var = sigma.square() + sd * sd;
  const torch::Tensor c_skip = (sd * sd) / var;
  const torch::Tensor c_out = sigma * sd * var.rsqrt();
  const torch::Tensor c_in = var.rsqrt();
  const torch::Tensor c_noise = sigma.log().flatten() / 4;
  torch::Tensor body_in = c_in * x;
  if (compute_dtype_ != torch::kFloat32 || channels_last_)
    body_in = body_in.to(compute_dtype_)
                  .contiguous(channels_last_ ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous);
  const torch::Tensor f = net_->Forward(body_in, c_noise, onehot).to(torch::kFloat32).contiguous();
  return torch::addcmul(c_skip * x, c_out, f);
}

absl::Status Denoiser::LoadStateDict(const TensorMap& weights, const std::string& source) {
  TensorMap expected = StateDict();
  std::vector<std::string> problems;
  for (const auto& [key, target] : expected) {
    auto it = weights.find(key);
    if (it == weights.end()) {
      problems.push_back(absl::StrCat("missing weight '", key, "' (expected shape ", ShapeString(target.sizes()), ")"));
    } else if (!it->second.is_floating_point()) {
      problems.push_back(absl::StrCat("weight '", key, "' has dtype ", c10::toString(it->second.scalar_type()),
                                      ", expected a floating-point type"));
    } else if (it->second.sizes() != target.sizes()) {
      problems.push_back(absl::StrCat("weight '", key, "' has shape ", ShapeString(it->second.sizes()),
                                      " but the configuration needs ", ShapeString(target.sizes())));
    }
  }
  for (const auto& [key, unused] : weights) {
    if (!expected.count(key))
      problems.push_back(
          absl::StrCat("unexpected weight '", key, "' (not part of this ", config_.architecture(), " configuration)"));
  }
  if (!problems.empty()) {
    std::string more = problems.size() > 1 ? absl::StrCat(" (and ", problems.size() - 1, " more problems)") : "";
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", problems.front(), more));
  }
  torch::NoGradGuard no_grad;
  for (auto& [key, target] : expected) target.copy_(weights.at(key));
  return absl::OkStatus();
}

void Denoiser::SetCompute(torch::ScalarType dtype, bool channels_last) {
  net_->SetCompute(dtype, channels_last);
  compute_dtype_ = dtype;
  channels_last_ = channels_last;
  if (below_transition_) below_transition_->SetCompute(dtype, channels_last);
}

TensorMap Denoiser::StateDict() const {
  TensorMap out;
  for (const auto& p : named_parameters(/*recurse=*/true)) out.emplace(p.key(), p.value());
  for (const auto& b : named_buffers(/*recurse=*/true)) out.emplace(b.key(), b.value());
  return out;
}

}  // namespace tcm
