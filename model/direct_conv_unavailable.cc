// DirectConv2d in builds without the direct path (-DTCM_WITH_CUDA=ON): every
// call takes LibTorch's convolution.
#include <stdexcept>

#include "model/direct_conv.h"

namespace tcm {

struct DirectConv2d::Primitive {};
struct DirectConv2d::Weights {};

DirectConv2d::DirectConv2d() = default;
DirectConv2d::~DirectConv2d() = default;

bool DirectConv2d::Available() { return false; }
void DirectConv2d::SetEnabled(bool) {}
bool DirectConv2d::Enabled() { return false; }
bool DirectConv2d::Supports(const torch::Tensor&, const torch::Tensor&, const ConvEpilogue&) { return false; }

torch::Tensor DirectConv2d::Run(const torch::Tensor&, const torch::Tensor&, const ConvEpilogue&) {
  throw std::logic_error("DirectConv2d::Run: this build has no direct convolutions (see Supports)");
}

}  // namespace tcm
