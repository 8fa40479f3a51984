// The preconditioned consistency function D(x, sigma, class) of a TCM: EDM
// preconditioning (sigma_data from the config) around one of the native
// U-Nets, held as submodule `model` so that parameter names match the
// reference ECMPrecond state_dict (`model.enc...`).
//
// With `transition_t` (t') in the config it is TCM's composition: rows with
// sigma >= t' go through `model`, the others through a second Denoiser held as
// submodule `below_transition` (keys `below_transition.model...`), as the
// reference TCMPrecond composes the stage-2 and stage-1 networks.
#ifndef TCM_MODEL_DENOISER_H_
#define TCM_MODEL_DENOISER_H_

#include <torch/nn/module.h>
#include <torch/types.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "model/row_shards.h"
#include "model/tensor_io.h"
#include "model/unet.h"
#include "tcm/v1/model_config.pb.h"

namespace tcm {

class Denoiser : public torch::nn::Module {
 public:
  // `config` must be completed (CompleteModelConfig). Weights start random.
  static absl::StatusOr<std::shared_ptr<Denoiser>> Create(const v1::ModelConfig& config);

  // x: [N, C, H, W]; sigma: [N] noise level per row (> 0); class_labels: [N]
  // int64 class indices, or undefined (unconditional, or a zero label vector
  // for a conditional network as in the reference). Computes in float32.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& sigma, const torch::Tensor& class_labels);

  // Copies `weights` (reference key names) into the parameters and buffers.
  // A missing or unexpected key, a shape mismatch or a non-float tensor is an
  // InvalidArgument error naming the key and what was expected; on error the
  // model is left unchanged. `source` prefixes messages (usually the path).
  absl::Status LoadStateDict(const TensorMap& weights, const std::string& source);

  // Parameters and buffers by reference key name.
  TensorMap StateDict() const;

  // Computes inference-time constants now (see UNet::PrepareForInference).
  void PrepareForInference() {
    net_->PrepareForInference();
    if (below_transition_) below_transition_->PrepareForInference();
  }

  // Runs the network body in `dtype` (float32 by default; bfloat16 or half)
  // and, with `channels_last`, with its activations and convolution weights
  // in channels-last layout. Preconditioning, the noise embedding and the
  // outputs stay float32 and contiguous; EDM2's weight normalisation is
  // computed in float32 and then cast. In inference call PrepareForInference
  // after it; in training the parameters stay float32 (the master weights)
  // and the casts are part of the graph.
  void SetCompute(torch::ScalarType dtype, bool channels_last);
  torch::ScalarType compute_dtype() const { return compute_dtype_; }
  bool channels_last() const { return channels_last_; }

  // With `on`, a forward pass in inference (grad mode off) on the CPU splits
  // a batch of at least two rows per intra-op thread of the calling thread
  // into that many shards, each computed on a thread of its own with one intra-op
  // thread (model/row_shards.h). The rows' values are those of the unsplit
  // pass, bit for bit: every operation computes each image on its own. Call
  // it after PrepareForInference; the parameters must not change while it is
  // on (the shards share the inference caches, which only read then).
  // (Rows whose sigma or label is not one per row run unsplit.)
  void SetRowShards(bool on) { row_shards_ = on; }
  bool row_shards() const { return row_shards_; }
  // Forward passes run in shards so far.
  int64_t sharded_passes() const { return sharded_passes_; }

  const v1::ModelConfig& config() const { return config_; }
  UNet& net() { return *net_; }
  // The network below t', or null.
  Denoiser* below_transition() { return below_transition_.get(); }
  double FlopsPerImage() const { return net_->FlopsPerImage(); }

 private:
  explicit Denoiser(v1::ModelConfig config);
  // forward() without the split into shards.
  torch::Tensor ForwardRows(const torch::Tensor& x, const torch::Tensor& sigma, const torch::Tensor& class_labels);
  torch::Tensor ForwardOne(const torch::Tensor& x, const torch::Tensor& sigma, const torch::Tensor& class_labels);
  v1::ModelConfig config_;
  std::shared_ptr<UNet> net_;
  std::shared_ptr<Denoiser> below_transition_;
  torch::ScalarType compute_dtype_ = torch::kFloat32;
  bool channels_last_ = false;
  bool row_shards_ = false;
  int64_t sharded_passes_ = 0;
  std::unique_ptr<RowShardPool> shard_pool_;  // created on the first split pass
};

}  // namespace tcm

#endif  // TCM_MODEL_DENOISER_H_
