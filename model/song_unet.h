// The DDPM++ / NCSN++ U-Net (`SongUNet` of EDM, Song et al. 2021), as used by
// the released TCM CIFAR-10 checkpoint: group norm, SiLU, adaptive-shift
// residual blocks, positional (DDPM++) or Fourier (NCSN++) noise embedding.
// Parameter names follow the reference state_dict (`map_layer0.weight`,
// `enc.32x32_block0.conv0.weight`, ...).
#ifndef TCM_MODEL_SONG_UNET_H_
#define TCM_MODEL_SONG_UNET_H_

#include <memory>

#include "model/unet.h"
#include "tcm/v1/model_config.pb.h"

namespace tcm {

// `config` must be completed (CompleteModelConfig) and hold `song`.
std::shared_ptr<UNet> MakeSongUNet(const v1::ModelConfig& config);

}  // namespace tcm

#endif  // TCM_MODEL_SONG_UNET_H_
