// The EDM2 U-Net (Karras et al. 2024, "Analyzing and Improving the Training
// Dynamics of Diffusion Models"), as used by the released TCM ImageNet-64
// checkpoints: magnitude-preserving layers, forced weight normalisation in
// training, Fourier noise embedding, attention at chosen resolutions.
// Parameter names follow the reference state_dict (`enc.64x64_conv.weight`,
// `emb_fourier.freqs`, ...).
#ifndef TCM_MODEL_EDM2_UNET_H_
#define TCM_MODEL_EDM2_UNET_H_

#include <memory>

#include "model/unet.h"
#include "tcm/v1/model_config.pb.h"

namespace tcm {

// `config` must be completed (CompleteModelConfig) and hold `edm2`.
// Weights are randomly initialised as in the reference constructor.
std::shared_ptr<UNet> MakeEdm2UNet(const v1::ModelConfig& config);

}  // namespace tcm

#endif  // TCM_MODEL_EDM2_UNET_H_
