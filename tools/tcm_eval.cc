// tcm-eval: quality of generated Fashion-MNIST images, measured with the
// project's small Fashion-MNIST classifier (training/classifier.h).
//
//   tcm-eval --model models/NAME [--steps 1,2] [--num 10000] [--floor] [--json results.json]
//   tcm-eval --model models/STAGE2 --teacher models/STAGE1 [--transition_t 1.0]
//   tcm-eval --model runs/NAME/edm/model --ode_steps 18      (a diffusion model)
//   tcm-eval --model runs/NAME/tcm/model --num 2000 --validation_images 5000   (a trial, on held-out images)
//   tcm-eval --train_classifier --out tools/eval/fashion-mnist-classifier.safetensors
//
// For each step count it samples --num images, image i of class i % 10 with
// noise seeded from (--seed, i), and reports the class accuracy (the
// classifier's argmax equals the requested class) and the Fréchet distance
// (FD) between the classifier features of the images and of the Fashion-MNIST
// test set (with --validation_images N, of the training images tcm-train holds
// out). Images are quantised to 8 bits first, as they are when served.
// Beside FD, each row has the improved precision and recall of the same
// features (training/manifold_metrics.h, k = 3; of the first 20,000 images of
// each set): the share of images that lie among the real ones and the share
// of real images the generated ones cover.
// --floor adds FD(test set, training set), the value a perfect generator
// would approach, the precision and recall of as many training images as the
// test set holds, and the classifier's accuracy on the test set.
//
// With --ode_steps N it instead samples with EDM's Heun ODE sampler (2N-1
// network evaluations), the way a diffusion model is judged; the row's steps
// is then the number of evaluations.
//
// With --teacher, a sampling step whose noise level is below --transition_t
// (t') runs on the teacher (the stage-1 network), the others on --model: the
// composition TCM's stage 2 was trained with.
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/flags_usage.h"
#include "common/status_macros.h"
#include "common/tool_main.h"
#include "common/write_file.h"
#include "model/cpu_threads.h"
#include "model/model_config.h"
#include "model/model_repository.h"
#include "model/sampler.h"
#include "nlohmann/json.hpp"
#include "tools/time_flags.h"
#include "training/classifier.h"
#include "training/dataset.h"
#include "training/evaluation.h"
#include "training/frechet.h"
#include "training/manifold_metrics.h"
#include "training/sample_grid.h"

ABSL_FLAG(std::string, model, "", "Model directory to evaluate (1 channel, 32x32, 10 classes).");
ABSL_FLAG(std::string, teacher, "",
          "Optional stage-1 model directory: sampling steps whose noise level is below --transition_t run on it.");
ABSL_FLAG(double, transition_t, 1.0,
          "t': with --teacher, steps below this noise level run on the teacher; in (0, t_max) of --model.");
ABSL_FLAG(std::string, steps, "1,2", "Step counts to evaluate, comma-separated: 1, 2 or 1,2.");
ABSL_FLAG(int, ode_steps, 0,
          "Instead of --steps, sample with EDM's deterministic Heun sampler over this many noise levels "
          "(2N-1 network evaluations): how a diffusion model (tcm-train diffusion) is judged. 0 = off, else 1 to "
          "1000.");
ABSL_FLAG(int64_t, num, 10000, "Images generated per step count (image i gets class i % 10), 2 to 1000000.");
ABSL_FLAG(int64_t, batch_size, 250, "Images per sampling batch, 1 to 4096.");
ABSL_FLAG(uint64_t, seed, 0, "Seed of the sampling noise.");
ABSL_FLAG(std::string, classifier, "tools/eval/fashion-mnist-classifier.safetensors", "The classifier's weights.");
ABSL_FLAG(bool, floor, false,
          "Also report FD(test set, training set), the precision and recall of the first 10,000 training images "
          "against the test set, and the classifier's test accuracy (works without --model).");
ABSL_FLAG(int64_t, validation_images, 0,
          "Measure FD against the last N images of the training split, the ones tcm-train holds out with "
          "--validation_images N, instead of the test set: for comparing trained models without looking at the "
          "test set. 0 = the test set.");
ABSL_FLAG(std::string, json, "",
          "Also write the results to this JSON file, replaced whole once the run is over (left as it was when the run "
          "fails).");
ABSL_FLAG(std::string, grid_dir, "",
          "Also write samples-1step.png / samples-2step.png (for the --steps given) into this directory: one row "
          "per class, seed 0, the grids tcm-train writes. For a model directory whose config.pbtxt was edited "
          "(mid_t, say). Empty = none.");
ABSL_FLAG(int, threads, 0, "Intra-op threads, 0 to 1024; 0 = one per core.");
ABSL_FLAG(std::string, precision, "fp32",
          "The sampled network's arithmetic: fp32 or bf16 (channels-last either way, as tcm-server runs it).");
ABSL_FLAG(bool, train_classifier, false, "Train the classifier on the Fashion-MNIST training split; see --out.");
ABSL_FLAG(std::string, out, "", "With --train_classifier: where to write the classifier's weights.");
ABSL_FLAG(int, epochs, 4, "With --train_classifier: passes over the training split, 1 to 1000.");
ABSL_FLAG(int64_t, train_batch_size, 128, "With --train_classifier: images per optimiser step, 1 to 65536.");
ABSL_FLAG(uint64_t, train_seed, 0, "With --train_classifier: seed of initialisation, shuffling and augmentation.");

namespace tcm {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::ordered_json;

// The ranges of the numeric flags, checked before any work: one line naming
// the flag, its range and the value given.
// Images per row (--num): a hundred times the Fashion-MNIST test set; each
// image's classifier features are kept until the row is scored (then only
// the first kMaxManifoldImages, for precision and recall).
constexpr int64_t kMaxNum = 1000000;
// Precision and recall compare every pair of images, so they take the first
// kMaxManifoldImages of each set (the test set's 10,000 whole): at --num's
// largest, all pairs would take hours.
constexpr int64_t kMaxManifoldImages = 20000;
// Images per sampling batch (--batch_size): past a few hundred a batch runs no
// faster, and a batch's activations must fit in memory (the model's own limit,
// CheckBatchActivations, is checked too once the model is read).
constexpr int64_t kMaxBatchSize = 4096;
// Noise levels of the Heun ODE sampler (--ode_steps): EDM samples in 18 to 256.
constexpr int kMaxOdeSteps = 1000;
// --train_classifier: passes over the training split (the classifier trains in
// 4) and images per step (a batch past the split's 60,000 is one of them all).
constexpr int kMaxEpochs = 1000;
constexpr int64_t kMaxTrainBatchSize = 65536;

double SecondsSince(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// Prints "label: done/total images, N images/s" to stderr at most every few
// seconds, and always once at the end.
ProgressFn PrintProgress(std::string label, int64_t total) {
  struct Clocks {
    Clock::time_point start = Clock::now(), last_print = Clock::now();
  };
  auto clocks = std::make_shared<Clocks>();
  return [label = std::move(label), total, clocks](int64_t done) {
    if (done < total && SecondsSince(clocks->last_print) < 5) return;
    clocks->last_print = Clock::now();
    std::fprintf(stderr, "%s: %lld/%lld images, %.1f images/s\n", label.c_str(), static_cast<long long>(done),
                 static_cast<long long>(total), done / std::max(SecondsSince(clocks->start), 1e-9));
  };
}

ProgressFn SamplingProgress(int steps, int64_t num) { return PrintProgress(absl::StrCat(steps, "-step"), num); }

ClassifierOutputs ClassifyWithProgress(FashionClassifier& classifier, const torch::Tensor& images,
                                       const std::string& label) {
  return ClassifyInChunks(classifier, images, /*chunk=*/5000, PrintProgress(label, images.size(0)));
}

// ---- --train_classifier ----

absl::Status TrainClassifierCommand() {
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return absl::InvalidArgumentError("--out: give the path of the weights to write");
  ClassifierTrainingOptions options;
  options.epochs = absl::GetFlag(FLAGS_epochs);
  options.batch_size = absl::GetFlag(FLAGS_train_batch_size);
  options.seed = absl::GetFlag(FLAGS_train_seed);
  if (options.epochs < 1 || options.epochs > kMaxEpochs)
    return absl::InvalidArgumentError(absl::StrCat("--epochs: must be in [1, ", kMaxEpochs, "], got ", options.epochs));
  if (options.batch_size < 1 || options.batch_size > kMaxTrainBatchSize)
    return absl::InvalidArgumentError(
        absl::StrCat("--train_batch_size: must be in [1, ", kMaxTrainBatchSize, "], got ", options.batch_size));

  std::printf(
      "training the classifier on Fashion-MNIST's training split: %d epochs, batch %lld, seed %llu, %d threads\n",
      options.epochs, static_cast<long long>(options.batch_size), static_cast<unsigned long long>(options.seed),
      torch::get_num_threads());
  std::fflush(stdout);
  const auto start = Clock::now();
  auto report = [&](const ClassifierTrainingProgress& p) {
    std::printf("epoch %d/%d: %lld/%lld images, loss %.4f, train accuracy %.4f, %.0f s\n", p.epoch, options.epochs,
                static_cast<long long>(p.images_done), static_cast<long long>(p.images_total), p.mean_loss,
                p.train_accuracy, SecondsSince(start));
    std::fflush(stdout);
  };
  TCM_ASSIGN_OR_RETURN(const double test_accuracy, TrainAndSaveClassifier(options, out, report));
  std::printf("test accuracy %.4f, trained in %.0f s\n", test_accuracy, SecondsSince(start));
  std::printf("wrote %s\n", out.c_str());
  return absl::OkStatus();
}

// ---- evaluation ----

struct EvalSettings {
  std::vector<int> step_counts;
  int ode_steps = 0;  // > 0: one row from the Heun ODE sampler instead of step_counts
  SamplingPlan plan;
  double transition_t = 1.0;
};

absl::StatusOr<std::vector<int>> ParseSteps(const std::string& text) {
  std::vector<int> steps;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int s;
    if (!absl::SimpleAtoi(part, &s) || (s != 1 && s != 2))
      return absl::InvalidArgumentError(absl::StrCat("--steps must be 1 or 2 (or 1,2), got \"", text, "\""));
    if (std::find(steps.begin(), steps.end(), s) == steps.end()) steps.push_back(s);
  }
  return steps;
}

absl::StatusOr<EvalSettings> ReadEvalSettings() {
  EvalSettings s;
  TCM_ASSIGN_OR_RETURN(s.step_counts, ParseSteps(absl::GetFlag(FLAGS_steps)));
  s.ode_steps = absl::GetFlag(FLAGS_ode_steps);
  s.plan.num = absl::GetFlag(FLAGS_num);
  s.plan.batch_size = absl::GetFlag(FLAGS_batch_size);
  s.plan.seed = absl::GetFlag(FLAGS_seed);
  s.transition_t = absl::GetFlag(FLAGS_transition_t);
  if (s.plan.num < 2 || s.plan.num > kMaxNum)
    return absl::InvalidArgumentError(
        absl::StrCat("--num: must be in [2, ", kMaxNum, "] (a covariance needs two images), got ", s.plan.num));
  if (s.plan.batch_size < 1 || s.plan.batch_size > kMaxBatchSize)
    return absl::InvalidArgumentError(
        absl::StrCat("--batch_size: must be in [1, ", kMaxBatchSize, "], got ", s.plan.batch_size));
  if (s.ode_steps < 0 || s.ode_steps > kMaxOdeSteps)
    return absl::InvalidArgumentError(absl::StrCat("--ode_steps: must be 0 (off) or a number of noise levels in [1, ",
                                                   kMaxOdeSteps, "], got ", s.ode_steps));
  // The upper end, the model's t_max, is checked once the model is read.
  if (!InsideTimeRange(s.transition_t, std::numeric_limits<float>::infinity()))
    return absl::InvalidArgumentError(
        absl::StrCat("--transition_t: must be in (0, t_max) of --model, got ", AsWritten(s.transition_t)));
  return s;
}

// Reads a model directory and checks that it makes Fashion-MNIST images.
absl::StatusOr<ModelDirectory> ReadFashionModel(const std::string& flag, const std::string& dir) {
  auto model = ReadModelDirectory(dir);
  if (!model.ok()) return absl::Status(model.status().code(), absl::StrCat("--", flag, ": ", model.status().message()));
  const auto& c = model->config;
  if (c.img_channels() != 1 || c.img_resolution() != kClassifierResolution || c.num_classes() != kClassifierClasses)
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, ": ", dir, " makes ", c.img_channels(), "-channel ", c.img_resolution(), "x", c.img_resolution(),
        " images of ", c.num_classes(), " classes; Fashion-MNIST models have 1 channel, 32x32 and 10 classes"));
  return model;
}

// The network to sample from: --model alone, or composed with --teacher below
// t'. Batches of `batch_size` images of it must stay within the model's limits.
absl::StatusOr<std::shared_ptr<Denoiser>> LoadSampler(const std::string& model_dir, const std::string& teacher_dir,
                                                      double transition_t, int64_t batch_size) {
  TCM_ASSIGN_OR_RETURN(ModelDirectory model, ReadFashionModel("model", model_dir));
  TCM_RETURN_IF_ERROR(CheckBatchActivations(model.config, batch_size, "--batch_size"));
  if (teacher_dir.empty()) return BuildReplica(model);
  TCM_RETURN_IF_ERROR(CheckTimeFlag("--transition_t: with --model's t_max,", transition_t, model.config.t_max()));
  TCM_ASSIGN_OR_RETURN(ModelDirectory teacher, ReadFashionModel("teacher", teacher_dir));
  auto composed = ComposeTruncated(model, teacher, transition_t);
  if (!composed.ok())
    return absl::Status(composed.status().code(), absl::StrCat("--teacher: ", composed.status().message()));
  return BuildReplica(*composed);
}

// The images FD is measured against: the test split, or the training split's
// last `validation_images` (what tcm-train holds out), with words naming them.
struct Reference {
  ClassifierSplit split;
  std::string description;
};

absl::StatusOr<Reference> LoadReference(int64_t validation_images) {
  if (validation_images == 0) {
    TCM_ASSIGN_OR_RETURN(ClassifierSplit test, LoadClassifierSplit(Split::kTest));
    return Reference{test, "fashion-mnist test split"};
  }
  TCM_ASSIGN_OR_RETURN(ClassifierSplit train, LoadClassifierSplit(Split::kTrain));
  const int64_t n = train.images.size(0);
  if (validation_images < 2 || validation_images >= n)
    return absl::InvalidArgumentError(absl::StrCat("--validation_images: must be 0 (the test set) or 2 to ", n - 1,
                                                   " (images of the training split), got ", validation_images));
  const int64_t first = n - validation_images;
  return Reference{{train.images.narrow(0, first, validation_images), train.labels.narrow(0, first, validation_images)},
                   absl::StrCat("fashion-mnist training split, images ", first, " to ", n - 1,
                                " (held out by tcm-train --validation_images ", validation_images, ")")};
}

struct Floor {
  double fd_test_train = 0;
  int64_t train_images = 0;
  double classifier_test_accuracy = 0;
  // The first training images, as many as the test set's, against the test set.
  std::optional<PrecisionRecall> train_precision_recall;
  int64_t manifold_train_images = 0;
};

torch::Tensor ManifoldImages(const torch::Tensor& features) {
  return features.narrow(0, 0, std::min(features.size(0), kMaxManifoldImages));
}

// The manifold of a set of features, for precision and recall; none for a set
// too small to have kManifoldNeighbours neighbours.
std::optional<Manifold> ManifoldOf(const torch::Tensor& features) {
  if (features.size(0) <= kManifoldNeighbours) return std::nullopt;
  return BuildManifold(ManifoldImages(features), kManifoldNeighbours);
}

std::optional<PrecisionRecall> PrecisionRecallOf(const std::optional<Manifold>& real, const torch::Tensor& generated) {
  if (!real || generated.size(0) <= kManifoldNeighbours) return std::nullopt;
  return ComputePrecisionRecall(*real, ManifoldImages(generated), kManifoldNeighbours);
}

// A share as the table prints it, "-" for none.
std::string ShareText(std::optional<double> share) {
  return share ? absl::StrFormat("%.4f", *share) : std::string("-");
}

// One line per result: the accuracy of each requested class, by the data set's
// class names; "-" for a class no image requested (--num below the classes).
void PrintPerClassAccuracy(const std::vector<StepResult>& results) {
  const std::vector<std::string>& names = FashionMnistClassNames();
  std::printf("%5s  %-28s", "evals", "accuracy per class");
  for (const std::string& name : names) std::printf(" %11.11s", name.c_str());
  std::printf("\n");
  for (const auto& r : results) {
    std::printf("%5d  %-28s", r.steps, "");
    for (const std::optional<double>& a : r.class_accuracy) {
      if (a)
        std::printf(" %11.4f", *a);
      else
        std::printf(" %11s", "-");
    }
    std::printf("\n");
  }
}

absl::Status WriteJson(const std::string& path, const Json& json) {
  absl::Status written = WriteFileAtomically(path, json.dump(2) + "\n");
  if (!written.ok()) return absl::Status(written.code(), absl::StrCat("--json: ", written.message()));
  return absl::OkStatus();
}

absl::Status Evaluate() {
  const std::string model_dir = absl::GetFlag(FLAGS_model), teacher_dir = absl::GetFlag(FLAGS_teacher);
  const std::string classifier_path = absl::GetFlag(FLAGS_classifier), json_path = absl::GetFlag(FLAGS_json);
  const bool floor = absl::GetFlag(FLAGS_floor);
  const int64_t validation_images = absl::GetFlag(FLAGS_validation_images);
  TCM_ASSIGN_OR_RETURN(EvalSettings settings, ReadEvalSettings());
  if (!json_path.empty())
    if (std::string problem = WritableFileProblem(json_path); !problem.empty())
      return absl::InvalidArgumentError(absl::StrCat("--json: cannot write ", json_path, ": ", problem));
  if (model_dir.empty() && !floor)
    return absl::InvalidArgumentError(
        "--model: give a model directory (or --floor, or --train_classifier; see --help)");
  if (floor && validation_images != 0)
    return absl::InvalidArgumentError("--floor measures against the test set: leave out --validation_images");
  if (model_dir.empty() && !teacher_dir.empty())
    return absl::InvalidArgumentError("--teacher needs --model (the network of steps at or above t')");

  const std::string grid_dir = absl::GetFlag(FLAGS_grid_dir);
  if (!grid_dir.empty() && (model_dir.empty() || settings.ode_steps > 0))
    return absl::InvalidArgumentError("--grid_dir needs --model and consistency sampling (--steps, not --ode_steps)");

  std::shared_ptr<Denoiser> model;
  if (!model_dir.empty()) {
    TCM_ASSIGN_OR_RETURN(model, LoadSampler(model_dir, teacher_dir, settings.transition_t, settings.plan.batch_size));
    const std::string precision = absl::GetFlag(FLAGS_precision);
    if (precision != "fp32" && precision != "bf16")
      return absl::InvalidArgumentError(absl::StrCat("--precision: must be fp32 or bf16, got ", precision));
    model->SetCompute(precision == "bf16" ? torch::kBFloat16 : torch::kFloat32, /*channels_last=*/true);
    model->PrepareForInference();
    model->SetRowShards(true);
  }
  if (!grid_dir.empty()) {
    if (absl::Status written = WriteModelSampleGrids(*model, settings.step_counts, grid_dir); !written.ok())
      return absl::InvalidArgumentError(absl::StrCat("--grid_dir: ", written.message()));
    std::fprintf(stderr, "wrote the sample grids of %s into %s\n", model_dir.c_str(), grid_dir.c_str());
  }
  auto classifier = LoadClassifier(classifier_path);
  if (!classifier.ok())
    return absl::Status(classifier.status().code(), absl::StrCat("--classifier: ", classifier.status().message()));
  TCM_ASSIGN_OR_RETURN(const Reference reference, LoadReference(validation_images));
  const ClassifierOutputs reference_outputs = ClassifyWithProgress(
      **classifier, reference.split.images, validation_images ? "held-out features" : "test set features");
  const FeatureStatistics reference_stats = ComputeFeatureStatistics(reference_outputs.features);
  // Built only where some set of images will be measured against it.
  const bool measures_manifold = floor || (!model_dir.empty() && settings.plan.num > kManifoldNeighbours);
  const std::optional<Manifold> reference_manifold =
      measures_manifold ? ManifoldOf(reference_outputs.features) : std::nullopt;

  Json json;
  json["classifier"] = classifier_path;
  json["reference"] = {{"dataset", reference.description}, {"images", reference_stats.count}};
  json["manifold_neighbours"] = kManifoldNeighbours;
  std::vector<StepResult> results;
  if (model) {
    json["model"] = model_dir;
    json["precision"] = absl::GetFlag(FLAGS_precision);
    if (!teacher_dir.empty()) {
      json["teacher"] = teacher_dir;
      json["transition_t"] = settings.transition_t;
    }
    json["num"] = settings.plan.num;
    json["seed"] = settings.plan.seed;
    if (settings.ode_steps > 0) {
      const int evals = 2 * settings.ode_steps - 1;
      results.push_back(EvaluateSampler(HeunOdeSampler(*model, settings.ode_steps), evals,
                                        absl::StrCat("Heun ODE, ", settings.ode_steps, " levels"), settings.plan,
                                        **classifier, reference_stats, SamplingProgress(evals, settings.plan.num)));
    } else {
      const std::string name = model->below_transition() ? absl::StrFormat("composed: below t'=%g the stage-1 network",
                                                                           model->config().transition_t())
                                                         : "model";
      for (int steps : settings.step_counts) {
        results.push_back(EvaluateSampler(ConsistencySampler(*model), steps, name, settings.plan, **classifier,
                                          reference_stats, SamplingProgress(steps, settings.plan.num)));
        // Of a row's features only those precision and recall read are kept
        // while the next row runs (a copy: a view would keep them all alive).
        results.back().features = ManifoldImages(results.back().features).clone();
      }
    }
  }
  std::optional<Floor> floor_result;
  if (floor) {
    TCM_ASSIGN_OR_RETURN(ClassifierSplit train, LoadClassifierSplit(Split::kTrain));
    const ClassifierOutputs train_outputs = ClassifyWithProgress(**classifier, train.images, "training set features");
    const int64_t matched = std::min(train_outputs.features.size(0), reference_stats.count);
    floor_result = Floor{FrechetDistance(reference_stats, ComputeFeatureStatistics(train_outputs.features)),
                         train.images.size(0), Accuracy(reference_outputs.logits, reference.split.labels),
                         PrecisionRecallOf(reference_manifold, train_outputs.features.narrow(0, 0, matched)), matched};
  }

  std::printf("classifier %s; FD against %s (%lld images)\n", classifier_path.c_str(), reference.description.c_str(),
              static_cast<long long>(reference_stats.count));
  if (model) {
    const std::string teacher_note = !teacher_dir.empty() ? absl::StrCat(", teacher ", teacher_dir) : "";
    std::printf("model %s%s, %lld images per row (class i %% 10), seed %llu\n", model_dir.c_str(), teacher_note.c_str(),
                static_cast<long long>(settings.plan.num), static_cast<unsigned long long>(settings.plan.seed));
    std::printf("%5s  %-28s %9s %10s %10s %10s %10s\n", "evals", "sampler", "accuracy", "FD", "precision", "recall",
                "images/s");
    Json rows = Json::array();
    for (const auto& r : results) {
      const std::optional<PrecisionRecall> pr = PrecisionRecallOf(reference_manifold, r.features);
      std::printf("%5d  %-28s %9.4f %10.4f %10s %10s %10.1f\n", r.steps, r.sampler.c_str(), r.accuracy, r.fd,
                  ShareText(pr ? std::optional(pr->precision) : std::nullopt).c_str(),
                  ShareText(pr ? std::optional(pr->recall) : std::nullopt).c_str(), r.images_per_second);
      Json per_class = Json::array();  // null for a class no image requested
      for (const std::optional<double>& a : r.class_accuracy) per_class.push_back(a ? Json(*a) : Json(nullptr));
      rows.push_back({{"steps", r.steps},
                      {"sampler", r.sampler},
                      {"images", settings.plan.num},
                      {"class_accuracy", r.accuracy},
                      {"class_accuracy_per_class", per_class},
                      {"fd", r.fd},
                      {"manifold_precision", pr ? Json(pr->precision) : Json(nullptr)},
                      {"manifold_recall", pr ? Json(pr->recall) : Json(nullptr)},
                      {"images_per_second", r.images_per_second}});
    }
    PrintPerClassAccuracy(results);
    json["results"] = rows;
  }
  if (floor_result) {
    std::printf("floor: FD(test, train) %.4f (%lld vs %lld images); classifier test accuracy %.4f\n",
                floor_result->fd_test_train, static_cast<long long>(reference_stats.count),
                static_cast<long long>(floor_result->train_images), floor_result->classifier_test_accuracy);
    const std::optional<PrecisionRecall>& pr = floor_result->train_precision_recall;
    if (pr)
      std::printf("floor: precision %.4f, recall %.4f of the first %lld training images against the test set\n",
                  pr->precision, pr->recall, static_cast<long long>(floor_result->manifold_train_images));
    json["floor"] = {{"fd_test_train", floor_result->fd_test_train},
                     {"test_images", reference_stats.count},
                     {"train_images", floor_result->train_images},
                     {"classifier_test_accuracy", floor_result->classifier_test_accuracy},
                     {"manifold_precision", pr ? Json(pr->precision) : Json(nullptr)},
                     {"manifold_recall", pr ? Json(pr->recall) : Json(nullptr)}};
  }
  if (!json_path.empty()) TCM_RETURN_IF_ERROR(WriteJson(json_path, json));
  return absl::OkStatus();
}

absl::Status Run() {
  const int threads = absl::GetFlag(FLAGS_threads);
  TCM_RETURN_IF_ERROR(CheckThreadsFlag(threads));
  ConfigureCpuThreads(threads);
  return absl::GetFlag(FLAGS_train_classifier) ? TrainClassifierCommand() : Evaluate();
}

}  // namespace
}  // namespace tcm

int main(int argc, char** argv) {
  tcm::SetUsage(
      "Class accuracy and Frechet distance (in a small classifier's feature space) of generated Fashion-MNIST "
      "images.\n"
      "  tcm-eval --model models/NAME [--steps 1,2] [--num 10000] [--floor] [--json FILE]\n"
      "  tcm-eval --model models/STAGE2 --teacher models/STAGE1 [--transition_t 1.0]\n"
      "  tcm-eval --train_classifier --out tools/eval/fashion-mnist-classifier.safetensors");
  const std::vector<char*> leftovers = absl::ParseCommandLine(argc, argv);
  return tcm::RunToolMain("tcm-eval", [&] {
    TCM_RETURN_IF_ERROR(tcm::NoPositionalArguments(leftovers));
    return tcm::Run();
  });
}
