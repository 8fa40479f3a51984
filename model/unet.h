// The interface shared by the native U-Nets (EDM2UNet, SongUNet): the raw
// network F of EDM preconditioning, with the reference parameter names.
#ifndef TCM_MODEL_UNET_H_
#define TCM_MODEL_UNET_H_

#include <torch/nn/module.h>
#include <torch/types.h>

namespace tcm {

class UNet : public torch::nn::Module {
 public:
  // x: [N, C, H, W] in the compute dtype and layout (see SetCompute), already
  // scaled by c_in; noise_labels: [N] float32 (c_noise per row);
  // class_onehot: [N, num_classes] float32, undefined for an unconditional
  // network. Returns F(x) with the shape of x, in the compute dtype.
  virtual torch::Tensor Forward(const torch::Tensor& x, const torch::Tensor& noise_labels,
                                const torch::Tensor& class_onehot) = 0;

  // Computes now whatever is constant at inference (normalised weights,
  // frequency tables) instead of at the first forward call. Optional: the
  // caches also refresh themselves when a weight changes.
  virtual void PrepareForInference() = 0;

  // The dtype the network body computes in and whether its activations and
  // convolution weights are channels-last. Inference only: training keeps
  // float32 and the default layout.
  virtual void SetCompute(torch::ScalarType dtype, bool channels_last) = 0;

  // Floating-point operations of one forward pass for one image, counted
  // from the architecture (2 per multiply-add of convolutions, linear layers
  // and attention matmuls; element-wise work is not counted).
  virtual double FlopsPerImage() const = 0;
};

// While alive on this thread, training-mode forward passes leave the stored
// weights alone instead of forcing their normalisation (EDM2). Consistency
// training wraps its no-grad target pass in it, as the reference does, so the
// weights the gradient pass saved are not changed under it.
class SkipForcedWeightNormalization {
 public:
  SkipForcedWeightNormalization() : previous_(Active()) { Active() = true; }
  ~SkipForcedWeightNormalization() { Active() = previous_; }
  SkipForcedWeightNormalization(const SkipForcedWeightNormalization&) = delete;
  SkipForcedWeightNormalization& operator=(const SkipForcedWeightNormalization&) = delete;

  static bool& Active() {
    thread_local bool active = false;
    return active;
  }

 private:
  bool previous_;
};

}  // namespace tcm

#endif  // TCM_MODEL_UNET_H_
