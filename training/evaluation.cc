#include "training/evaluation.h"

#include <torch/torch.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "training/ode_sampler.h"

namespace tcm {

ImageSampler ConsistencySampler(Denoiser& model) {
  return [&model](const std::vector<ImageSpec>& specs) { return SampleImages(model, specs); };
}

ImageSampler HeunOdeSampler(Denoiser& model, int ode_steps) {
  return [&model, ode_steps](const std::vector<ImageSpec>& specs) {
    const v1::ModelConfig& config = model.config();
    std::vector<torch::Tensor> latents;
    std::vector<int64_t> classes;
    for (const ImageSpec& spec : specs) {
      latents.push_back(ImageNoise(config, spec.seed, spec.index, NoiseStream::kLatent));
      classes.push_back(spec.class_label);
    }
    const torch::Tensor labels = torch::tensor(classes, torch::kInt64);
    OdeSamplerOptions options;
    options.steps = ode_steps;
    options.sigma_max = config.t_max();
    const DenoiseFn denoise = [&](const torch::Tensor& x, double sigma) {
      return model.forward(x, torch::full({x.size(0)}, sigma, torch::kFloat32), labels);
    };
    return SolveProbabilityFlow(denoise, torch::stack(latents) * config.t_max(), options);
  };
}

torch::Tensor Quantize8Bit(const torch::Tensor& images) {
  return images.mul(127.5).add(127.5).round().clamp(0, 255).div(127.5).sub(1);
}

absl::StatusOr<ClassifierSplit> LoadClassifierSplit(Split split) {
  TCM_ASSIGN_OR_RETURN(LabeledImages data, LoadDataset("fashion-mnist", split));
  TCM_ASSIGN_OR_RETURN(torch::Tensor images, ToModelInput(data.images, kClassifierResolution));
  return ClassifierSplit{images, data.labels};
}

ClassifierOutputs ClassifyInChunks(FashionClassifier& classifier, const torch::Tensor& images, int64_t chunk,
                                   const ProgressFn& progress) {
  const int64_t n = images.size(0);
  std::vector<torch::Tensor> features, logits;
  for (int64_t start = 0; start < n; start += chunk) {
    ClassifierOutputs out = Classify(classifier, images.narrow(0, start, std::min(chunk, n - start)));
    features.push_back(out.features);
    logits.push_back(out.logits);
    if (progress) progress(start + out.features.size(0));
  }
  return {torch::cat(features), torch::cat(logits)};
}

StepResult EvaluateSampler(const ImageSampler& sample, int steps, const std::string& sampler_name,
                           const SamplingPlan& plan, FashionClassifier& classifier, const FeatureStatistics& reference,
                           const ProgressFn& progress) {
  const auto start_time = std::chrono::steady_clock::now();
  StepResult result;
  result.steps = steps;
  result.sampler = sampler_name;
  std::vector<torch::Tensor> features;
  torch::Tensor correct = torch::zeros({kClassifierClasses}, torch::kInt64);
  torch::Tensor requested_count = torch::zeros({kClassifierClasses}, torch::kInt64);
  for (int64_t start = 0; start < plan.num; start += plan.batch_size) {
    std::vector<ImageSpec> specs;
    for (int64_t i = start; i < std::min(plan.num, start + plan.batch_size); ++i)
      specs.push_back({plan.seed, uint64_t(i), i % kClassifierClasses, steps});
    torch::Tensor images;
    {
      torch::InferenceMode inference;
      images = sample(specs);
    }
    ClassifierOutputs out = Classify(classifier, Quantize8Bit(images));
    torch::Tensor requested = torch::arange(start, start + int64_t(specs.size()), torch::kInt64) % kClassifierClasses;
    correct.index_add_(0, requested, out.logits.argmax(1).eq(requested).to(torch::kInt64));
    requested_count.index_add_(0, requested, torch::ones_like(requested));
    features.push_back(out.features);
    if (progress) progress(start + int64_t(specs.size()));
  }
  result.accuracy = double(correct.sum().item<int64_t>()) / plan.num;
  for (int64_t c = 0; c < kClassifierClasses; ++c) {
    const int64_t n = requested_count[c].item<int64_t>();
    if (n == 0)
      result.class_accuracy.push_back(std::nullopt);  // no image requested the class: it has no accuracy
    else
      result.class_accuracy.push_back(double(correct[c].item<int64_t>()) / n);
  }
  result.features = torch::cat(features);
  result.fd = FrechetDistance(ComputeFeatureStatistics(result.features), reference);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  result.images_per_second = plan.num / std::max(seconds, 1e-9);
  return result;
}

absl::StatusOr<double> TrainAndSaveClassifier(const ClassifierTrainingOptions& options, const std::string& out,
                                              const std::function<void(const ClassifierTrainingProgress&)>& report) {
  TCM_ASSIGN_OR_RETURN(ClassifierSplit train, LoadClassifierSplit(Split::kTrain));
  TCM_ASSIGN_OR_RETURN(ClassifierSplit test, LoadClassifierSplit(Split::kTest));
  TCM_ASSIGN_OR_RETURN(auto classifier, TrainClassifier(train.images, train.labels, options, report));
  const double test_accuracy = Accuracy(Classify(*classifier, test.images).logits, test.labels);
  TCM_RETURN_IF_ERROR(SaveClassifier(out, *classifier,
                                     {{"format", "tcm-eval Fashion-MNIST classifier (training/classifier.h)"},
                                      {"test_accuracy", absl::StrFormat("%.4f", test_accuracy)},
                                      {"epochs", absl::StrCat(options.epochs)},
                                      {"batch_size", absl::StrCat(options.batch_size)},
                                      {"learning_rate", absl::StrCat(options.learning_rate)},
                                      {"weight_decay", absl::StrCat(options.weight_decay)},
                                      {"augment", options.augment ? "horizontal flips, shifts up to 2 pixels" : "none"},
                                      {"seed", absl::StrCat(options.seed)}}));
  return test_accuracy;
}

}  // namespace tcm
