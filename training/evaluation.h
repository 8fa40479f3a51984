// Sample-quality evaluation of Fashion-MNIST generators (the library behind
// tcm-eval): samplers that draw images for ImageSpecs, and the scoring of
// their images by the evaluation classifier (training/classifier.h): class
// accuracy and the Fréchet distance (FD) in the classifier's feature space.
#ifndef TCM_TRAINING_EVALUATION_H_
#define TCM_TRAINING_EVALUATION_H_

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/denoiser.h"
#include "model/sampler.h"
#include "training/classifier.h"
#include "training/dataset.h"
#include "training/frechet.h"

namespace tcm {

// Draws images [N, C, H, W] in [-1, 1] for `specs` (an ODE sampler ignores their steps).
using ImageSampler = std::function<torch::Tensor(const std::vector<ImageSpec>& specs)>;

// Consistency sampling in each spec's steps, as the server does. `model` must outlive the sampler.
ImageSampler ConsistencySampler(Denoiser& model);

// EDM's Heun sampler (2 * ode_steps - 1 network evaluations) from each
// image's seeded latent noise at t_max. `model` must outlive the sampler.
ImageSampler HeunOdeSampler(Denoiser& model, int ode_steps);

// 8-bit quantisation: what a served PNG holds, mapped back to [-1, 1].
torch::Tensor Quantize8Bit(const torch::Tensor& images);

// Called with the number of images done so far; may be empty.
using ProgressFn = std::function<void(int64_t done)>;

// A Fashion-MNIST split as classifier input: float [N, 1, 32, 32] in [-1, 1], int64 labels [N].
struct ClassifierSplit {
  torch::Tensor images;
  torch::Tensor labels;
};
absl::StatusOr<ClassifierSplit> LoadClassifierSplit(Split split);

// Classify() over `images` in chunks of `chunk` rows, reporting after each.
ClassifierOutputs ClassifyInChunks(FashionClassifier& classifier, const torch::Tensor& images, int64_t chunk,
                                   const ProgressFn& progress);

// Which images a row of the evaluation draws: image i (0 <= i < num) has
// class i % 10 and noise seeded from (seed, i); they are drawn batch_size at a time.
struct SamplingPlan {
  int64_t num = 10000;
  int64_t batch_size = 250;
  uint64_t seed = 0;
};

struct StepResult {
  int steps = 0;        // network evaluations per image
  std::string sampler;  // a name for the table
  double accuracy = 0;  // fraction whose predicted class is the requested one
  // The same per requested class, in class order; empty (no accuracy) for a
  // class no image requested, as when plan.num is below the number of classes.
  std::vector<std::optional<double>> class_accuracy;
  double fd = 0;                 // against `reference`
  double images_per_second = 0;  // sampling and scoring together
  torch::Tensor features;        // the images' classifier features [num, D], for further measures
};

// Samples plan.num images of `steps` steps with `sample`, quantises them to
// 8 bits and scores them against `reference` (the statistics of real images).
StepResult EvaluateSampler(const ImageSampler& sample, int steps, const std::string& sampler_name,
                           const SamplingPlan& plan, FashionClassifier& classifier, const FeatureStatistics& reference,
                           const ProgressFn& progress);

// Trains the evaluation classifier on Fashion-MNIST's training split, scores
// it on the test split and saves it to `out` with its settings and test
// accuracy as metadata. Returns the test accuracy.
absl::StatusOr<double> TrainAndSaveClassifier(const ClassifierTrainingOptions& options, const std::string& out,
                                              const std::function<void(const ClassifierTrainingProgress&)>& report);

}  // namespace tcm

#endif  // TCM_TRAINING_EVALUATION_H_
