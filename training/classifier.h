// A small Fashion-MNIST classifier used to evaluate generated images: class
// accuracy of its predictions and a Fréchet distance in its feature space
// (the FID recipe with this network's features instead of Inception's).
//
// Network: three blocks of 3x3 convolution, BatchNorm, ReLU and 2x2 max
// pooling (32, 64, 128 channels; 32 -> 16 -> 8 -> 4 pixels), a linear layer
// to kClassifierFeatures ReLU features, and a linear head to 10 logits.
// Inputs are [N, 1, 32, 32] float in [-1, 1] (ToModelInput(images, 32)).
#ifndef TCM_TRAINING_CLASSIFIER_H_
#define TCM_TRAINING_CLASSIFIER_H_

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "model/tensor_io.h"

namespace tcm {

inline constexpr int64_t kClassifierResolution = 32;
inline constexpr int64_t kClassifierClasses = 10;
inline constexpr int64_t kClassifierFeatures = 128;

class FashionClassifier : public torch::nn::Module {
 public:
  FashionClassifier();  // random weights (torch's default initialisation)

  // x: [N, 1, 32, 32] float in [-1, 1]. Features: [N, kClassifierFeatures]
  // (the input of the head); logits: [N, kClassifierClasses].
  torch::Tensor Features(const torch::Tensor& x);
  torch::Tensor Logits(const torch::Tensor& x) { return LogitsOfFeatures(Features(x)); }
  torch::Tensor LogitsOfFeatures(const torch::Tensor& features);

  // Parameters and buffers (BatchNorm statistics) by name.
  TensorMap StateDict() const;
  // Copies `weights` in; a missing, extra or mis-shaped tensor is an
  // InvalidArgument error naming `source` and the key. On error the network
  // is left unchanged.
  absl::Status LoadStateDict(const TensorMap& weights, const std::string& source);

 private:
  torch::nn::Sequential body_;  // convolutions and the feature layer
  torch::nn::Linear head_;
};

struct ClassifierTrainingOptions {
  int epochs = 4;
  int64_t batch_size = 128;
  double learning_rate = 2e-3;  // Adam, cosine-decayed to 0 over the run
  double weight_decay = 1e-4;
  uint64_t seed = 0;    // initialisation, shuffling and augmentation
  bool augment = true;  // random horizontal flips and shifts of up to 2 pixels
};

struct ClassifierTrainingProgress {
  int epoch = 0;            // 1-based
  int64_t images_done = 0;  // within the epoch
  int64_t images_total = 0;
  double mean_loss = 0;  // over the epoch so far
  double train_accuracy = 0;
};

// Trains a fresh classifier on `images` (float [N, 1, 32, 32] in [-1, 1]) and
// `labels` (int64 [N]). Calls `report` (may be empty) every ten seconds or so and
// at the end of each epoch. Deterministic for a given seed and thread count.
absl::StatusOr<std::shared_ptr<FashionClassifier>> TrainClassifier(
    const torch::Tensor& images, const torch::Tensor& labels, const ClassifierTrainingOptions& options,
    const std::function<void(const ClassifierTrainingProgress&)>& report);

struct ClassifierOutputs {
  torch::Tensor features;  // float [N, kClassifierFeatures]
  torch::Tensor logits;    // float [N, kClassifierClasses]
};

// Runs the classifier (eval mode, no gradients) over `images` in batches.
ClassifierOutputs Classify(FashionClassifier& classifier, const torch::Tensor& images, int64_t batch_size = 500);

// Fraction of rows whose argmax logit equals `labels` (int64 [N]).
double Accuracy(const torch::Tensor& logits, const torch::Tensor& labels);

// Saves the weights as safetensors with `metadata`; loads them back (eval mode).
absl::Status SaveClassifier(const std::string& path, const FashionClassifier& classifier,
                            const std::map<std::string, std::string>& metadata);
absl::StatusOr<std::shared_ptr<FashionClassifier>> LoadClassifier(const std::string& path);

}  // namespace tcm

#endif  // TCM_TRAINING_CLASSIFIER_H_
