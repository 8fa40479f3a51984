// The interface shared by the native U-Nets (EDM2UNet, SongUNet): the raw
// network F of EDM preconditioning, with the reference parameter names.
#ifndef TCM_MODEL_UNET_H_
#define TCM_MODEL_UNET_H_

#include <torch/nn/module.h>
#include <torch/types.h>

namespace tcm {

class UNet : public torch::nn::Module {
 public:
  // x: [N, C, H, W] float32, already scaled by c_in; noise_labels: [N]
  // (c_noise per row); class_onehot: [N, num_classes], undefined for an
  // unconditional network. Returns F(x) with the shape of x.
  virtual torch::Tensor Forward(const torch::Tensor& x, const torch::Tensor& noise_labels,
                                const torch::Tensor& class_onehot) = 0;

  // Computes now whatever is constant at inference (normalised weights,
  // frequency tables) instead of at the first forward call. Optional: the
  // caches also refresh themselves when a weight changes.
  virtual void PrepareForInference() = 0;

  // Floating-point operations of one forward pass for one image, counted
  // from the architecture (2 per multiply-add of convolutions, linear layers
  // and attention matmuls; element-wise work is not counted).
  virtual double FlopsPerImage() const = 0;
};

}  // namespace tcm

#endif  // TCM_MODEL_UNET_H_
