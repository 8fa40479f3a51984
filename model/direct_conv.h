// A convolution layer's inference path through oneDNN's own API (the library
// LibTorch's CPU convolutions run on), without LibTorch's per-call work: the
// primitive is made once per input shape and thread count, the weight is
// reordered into the primitive's layout once per weight tensor, and a
// residual sum with its clip runs inside the convolution (the residual is
// copied into the output, which oneDNN's sum post-operation adds to)
// instead of in a pass of its own that reads and writes the output again.
#ifndef TCM_MODEL_DIRECT_CONV_H_
#define TCM_MODEL_DIRECT_CONV_H_

#include <torch/types.h>

#include <memory>
#include <mutex>
#include <vector>

namespace tcm {

// What a convolution adds to its result before it is stored:
// clamp(conv + residual_scale * residual, -clip, clip); no residual when
// `residual` is undefined, no clamp when clip <= 0.
struct ConvEpilogue {
  torch::Tensor residual;
  double residual_scale = 1.0;
  double clip = 0.0;
  // The caller gives the residual up: the result is written into its memory
  // (and returned as that tensor) instead of a new tensor's.
  bool overwrite_residual = false;
};

// The convolution of one layer: stride 1, dilation 1, one group, "same"
// padding (kernel size / 2). Thread-safe: row shards call one layer from
// several threads at once.
class DirectConv2d {
 public:
  DirectConv2d();
  ~DirectConv2d();
  DirectConv2d(const DirectConv2d&) = delete;
  DirectConv2d& operator=(const DirectConv2d&) = delete;

  // Whether this build has the direct path (not in a CUDA build, whose
  // LibTorch carries another oneDNN); without it Supports is always false.
  static bool Available();

  // Process-wide switch, on by default; off sends every call to LibTorch
  // (tcm-model-bench --direct_conv=false measures the difference).
  static void SetEnabled(bool enabled);
  static bool Enabled();

  // Whether Run takes this call: the switch is on, grad mode is off, x is a
  // dense channels-last 4-D float32 or bf16 CPU tensor, w [out, in, k, k]
  // of x's dtype with odd k, and the epilogue's residual (if any) has the
  // output's sizes, dtype and channels-last layout.
  static bool Supports(const torch::Tensor& x, const torch::Tensor& w, const ConvEpilogue& epilogue);

  // The convolution of x with w, the epilogue applied in float32 before the
  // one rounding to x's dtype; channels-last output. Only for calls that
  // Supports accepts. Every image is computed by the same kernel with the
  // same arithmetic for every batch size, as LibTorch's oneDNN path does.
  torch::Tensor Run(const torch::Tensor& x, const torch::Tensor& w, const ConvEpilogue& epilogue);

 private:
  struct Primitive;
  struct Weights;
  std::shared_ptr<const Primitive> FindOrMake(const torch::Tensor& x, const torch::Tensor& w,
                                              const ConvEpilogue& epilogue);

  std::mutex mu_;
  torch::Tensor weight_source_;  // the tensor `weights_` were reordered from
  std::vector<std::shared_ptr<const Primitive>> primitives_;
  std::vector<std::shared_ptr<const Weights>> weights_;  // one per weight layout the primitives ask for
};

}  // namespace tcm

#endif  // TCM_MODEL_DIRECT_CONV_H_
