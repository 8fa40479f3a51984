#include "training/classifier.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace tcm {
namespace {

namespace nn = torch::nn;

// 3x3 convolution (no bias: BatchNorm follows), BatchNorm, ReLU, 2x2 max pooling.
void AddConvBlock(nn::Sequential& body, int64_t in_channels, int64_t out_channels) {
  body->push_back(nn::Conv2d(nn::Conv2dOptions(in_channels, out_channels, 3).padding(1).bias(false)));
  body->push_back(nn::BatchNorm2d(out_channels));
  body->push_back(nn::ReLU());
  body->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(2)));
}

std::string ShapeString(const torch::Tensor& t) { return absl::StrCat("[", absl::StrJoin(t.sizes(), ", "), "]"); }

// Random horizontal flips and shifts of up to `max_shift` pixels (the border
// filled with -1, the background), each drawn per image.
torch::Tensor Augment(const torch::Tensor& batch, int64_t max_shift) {
  const int64_t n = batch.size(0), h = batch.size(2), w = batch.size(3);
  torch::Tensor flip = torch::rand({n}) < 0.5;
  torch::Tensor x = torch::where(flip.view({n, 1, 1, 1}), batch.flip({3}), batch);
  torch::Tensor padded = torch::constant_pad_nd(x, {max_shift, max_shift, max_shift, max_shift}, -1.0);
  torch::Tensor offsets = torch::randint(0, 2 * max_shift + 1, {n, 2}, torch::kInt64);
  torch::Tensor out = torch::empty_like(batch);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t top = offsets[i][0].item<int64_t>(), left = offsets[i][1].item<int64_t>();
    out[i].copy_(padded[i].narrow(1, top, h).narrow(2, left, w));
  }
  return out;
}

}  // namespace

FashionClassifier::FashionClassifier() : head_(nn::Linear(kClassifierFeatures, kClassifierClasses)) {
  nn::Sequential body;
  AddConvBlock(body, 1, 32);    // 32x32 -> 16x16
  AddConvBlock(body, 32, 64);   // -> 8x8
  AddConvBlock(body, 64, 128);  // -> 4x4
  body->push_back(nn::Flatten());
  body->push_back(nn::Linear(128 * 4 * 4, kClassifierFeatures));
  body->push_back(nn::ReLU());
  body_ = register_module("body", body);
  register_module("head", head_);
}

torch::Tensor FashionClassifier::Features(const torch::Tensor& x) { return body_->forward(x); }

torch::Tensor FashionClassifier::LogitsOfFeatures(const torch::Tensor& features) { return head_->forward(features); }

TensorMap FashionClassifier::StateDict() const {
  TensorMap out;
  for (const auto& p : named_parameters()) out.emplace(p.key(), p.value());
  for (const auto& b : named_buffers()) out.emplace(b.key(), b.value());
  return out;
}

absl::Status FashionClassifier::LoadStateDict(const TensorMap& weights, const std::string& source) {
  TensorMap own = StateDict();
  for (const auto& [name, tensor] : weights)
    if (!own.count(name)) return absl::InvalidArgumentError(absl::StrCat(source, ": unexpected tensor '", name, "'"));
  for (const auto& [name, target] : own) {
    auto it = weights.find(name);
    if (it == weights.end()) return absl::InvalidArgumentError(absl::StrCat(source, ": missing tensor '", name, "'"));
    if (it->second.sizes() != target.sizes() || it->second.scalar_type() != target.scalar_type())
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": '", name, "' is ", c10::toString(it->second.scalar_type()), " ", ShapeString(it->second),
          ", expected ", c10::toString(target.scalar_type()), " ", ShapeString(target)));
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : own) target.copy_(weights.at(name));
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<FashionClassifier>> TrainClassifier(
    const torch::Tensor& images, const torch::Tensor& labels, const ClassifierTrainingOptions& options,
    const std::function<void(const ClassifierTrainingProgress&)>& report) {
  if (images.dim() != 4 || images.size(1) != 1 || images.size(2) != kClassifierResolution ||
      images.size(3) != kClassifierResolution)
    return absl::InvalidArgumentError(absl::StrCat("training images are ", ShapeString(images), ", expected [N, 1, ",
                                                   kClassifierResolution, ", ", kClassifierResolution, "]"));
  if (labels.dim() != 1 || labels.size(0) != images.size(0))
    return absl::InvalidArgumentError("training labels must be one per image");
  if (options.epochs <= 0 || options.batch_size <= 0)
    return absl::InvalidArgumentError("epochs and batch size must be positive");

  torch::manual_seed(options.seed);
  auto classifier = std::make_shared<FashionClassifier>();
  classifier->train();
  torch::optim::AdamW optimizer(classifier->parameters(),
                                torch::optim::AdamWOptions(options.learning_rate).weight_decay(options.weight_decay));
  const int64_t n = images.size(0);
  const int64_t batches_per_epoch = (n + options.batch_size - 1) / options.batch_size;
  const int64_t total_batches = batches_per_epoch * options.epochs;
  int64_t batch_number = 0;
  auto last_report = std::chrono::steady_clock::now();
  for (int epoch = 1; epoch <= options.epochs; ++epoch) {
    torch::Tensor order = torch::randperm(n, torch::kInt64);
    ClassifierTrainingProgress progress;
    progress.epoch = epoch;
    progress.images_total = n;
    double loss_sum = 0;
    int64_t correct = 0;
    for (int64_t start = 0; start < n; start += options.batch_size, ++batch_number) {
      const double lr = 0.5 * options.learning_rate * (1 + std::cos(M_PI * batch_number / total_batches));
      for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
      torch::Tensor rows = order.narrow(0, start, std::min(options.batch_size, n - start));
      torch::Tensor x = images.index_select(0, rows), y = labels.index_select(0, rows);
      if (options.augment) x = Augment(x, 2);
      torch::Tensor logits = classifier->Logits(x);
      torch::Tensor loss = torch::nn::functional::cross_entropy(logits, y);
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
      loss_sum += loss.item<double>() * rows.size(0);
      correct += logits.argmax(1).eq(y).sum().item<int64_t>();
      progress.images_done = start + rows.size(0);
      progress.mean_loss = loss_sum / progress.images_done;
      progress.train_accuracy = double(correct) / progress.images_done;
      const auto now = std::chrono::steady_clock::now();
      if (progress.images_done == n || now - last_report > std::chrono::seconds(10)) {
        last_report = now;
        if (report) report(progress);
      }
    }
  }
  classifier->eval();
  return classifier;
}

ClassifierOutputs Classify(FashionClassifier& classifier, const torch::Tensor& images, int64_t batch_size) {
  classifier.eval();
  torch::InferenceMode inference;
  std::vector<torch::Tensor> features, logits;
  for (int64_t start = 0; start < images.size(0); start += batch_size) {
    torch::Tensor f = classifier.Features(images.narrow(0, start, std::min(batch_size, images.size(0) - start)));
    features.push_back(f);
    logits.push_back(classifier.LogitsOfFeatures(f));
  }
  if (features.empty()) return {torch::empty({0, kClassifierFeatures}), torch::empty({0, kClassifierClasses})};
  return {torch::cat(features), torch::cat(logits)};
}

double Accuracy(const torch::Tensor& logits, const torch::Tensor& labels) {
  if (logits.size(0) == 0) return 0;
  return logits.argmax(1).eq(labels).to(torch::kFloat64).mean().item<double>();
}

absl::Status SaveClassifier(const std::string& path, const FashionClassifier& classifier,
                            const std::map<std::string, std::string>& metadata) {
  return WriteTensors(path, classifier.StateDict(), metadata);
}

absl::StatusOr<std::shared_ptr<FashionClassifier>> LoadClassifier(const std::string& path) {
  TCM_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Read(path));
  auto classifier = std::make_shared<FashionClassifier>();
  TCM_RETURN_IF_ERROR(classifier->LoadStateDict(ToTensors(file), path));
  classifier->eval();
  return classifier;
}

}  // namespace tcm
