// The training loop shared by the three stages of the TCM recipe: diffusion
// pre-training, stage-1 consistency training and stage-2 truncated training.
// Adam with EDM2's inverse-square-root learning-rate decay, gradient clipping,
// an EMA of the weights (and more power EMAs to choose from at the end), and
// checkpoints that resume exactly.
#ifndef TCM_TRAINING_TRAINER_H_
#define TCM_TRAINING_TRAINER_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/denoiser.h"
#include "training/losses.h"

namespace tcm {

enum class Stage { kDiffusion, kConsistency, kTruncated };

// "diffusion", "consistency" or "truncated".
absl::StatusOr<Stage> ParseStage(const std::string& name);
const char* StageName(Stage stage);

// The largest batch: a step holds several float32 copies of the batch and the
// network's activations for each image, far beyond memory above this.
inline constexpr int64_t kMaxBatchSize = 65536;
// The largest gap ratio (--ratio_limit): past 1 - 1e-5 the gap is too small
// for float32 times to hold. The largest schedule stage at step 0
// (--start_stage): the ratio 1 - 1/q^(stage + 1) stops moving some 50 stages in.
inline constexpr double kMaxRatioLimit = 0.99999;
inline constexpr int64_t kMaxStartStage = 1000000;

// The most steps a run may take (--steps): far beyond any run's, a bound a
// checkpoint's stored step is checked against too.
inline constexpr int64_t kMaxSteps = 1000000000000;

// Defaults are the reference's (ct_train.py, training/loss.py).
struct TrainOptions {
  Stage stage = Stage::kConsistency;
  int64_t batch_size = 512;
  // Adam and the learning rate lr / sqrt(max(step / decay_iter, 1)), ramped
  // up linearly over rampup_iter steps (0 = neither).
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;
  int64_t decay_iter = 0, rampup_iter = 0;
  double grad_clip = 1e6;  // max global gradient norm
  // EMA: "power" (beta = (1 - 1/step)^(gamma + 1), EDM2) or "constant" (beta).
  std::string ema_type = "constant";
  double ema_gamma = 16.97, ema_beta = 0.9999;
  // More power EMAs, one per gamma, tracked beside the main one (power only):
  // the EMA profile can then be chosen once training ends.
  std::vector<double> ema_gamma_candidates;
  DiffusionLossOptions diffusion;
  ConsistencyLossOptions consistency;
  // The gap schedule: stage = start_stage + step / double_every.
  double q = 2.0, ratio_limit = 0.999;
  int64_t double_every = 50000, start_stage = 0;
  // Stage 2: the boundary loss weight and t'.
  double w_boundary = 1.0, transition_t = 1.0;
};

// The EMA settings: a known ema_type, gammas (--ema_gamma's and the
// candidates', power only) that are positive and a beta in [0, 1).
absl::Status CheckEmaOptions(const TrainOptions& options);

// Every numeric option in its range (CheckEmaOptions included): an
// InvalidArgument error of one line naming the flag, its allowed range and the
// value given, e.g. "--beta1: must be in [0, 1), got 1". NaN is never allowed.
absl::Status CheckTrainOptions(const TrainOptions& options);

// What one optimisation step did.
struct StepStats {
  int64_t step = 0;     // steps done after this one
  double loss = 0;      // mean weighted loss (regular rows)
  double boundary = 0;  // mean weighted boundary loss (stage 2)
  double unweighted = 0;
  double grad_norm = 0;
  double lr = 0;
  double ratio = 0;  // gap ratio (consistency stages)
};

class Trainer {
 public:
  // `net` is trained (its weights are the starting point), `teacher` is the
  // frozen stage-1 network of stage 2 (null otherwise). `images` is float32
  // [N, C, R, R] in [-1, 1], `labels` int64 [N].
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const TrainOptions& options, std::shared_ptr<Denoiser> net,
                                                         std::shared_ptr<Denoiser> teacher, torch::Tensor images,
                                                         torch::Tensor labels);

  StepStats Step();
  int64_t step() const { return step_; }
  // The gap ratio the next step trains with (consistency stages):
  // 1 - 1/q^(stage + 1), stage = start_stage + steps done / double_every.
  double NextGapRatio() const;

  // Checkpoint: weights, EMAs, Adam state, step, generator state; written to a
  // temporary file and renamed, so a crash leaves the previous one intact.
  absl::Status SaveCheckpoint(const std::string& path);
  // Restores a checkpoint written for the same stage and network. Refuses,
  // in one line naming `path`, a file LibTorch cannot read, a step outside [0, kMaxSteps]
  // and a weight, EMA or Adam tensor that holds NaN or infinity (naming it).
  absl::Status LoadCheckpoint(const std::string& path);

  // The EMA network (eval mode), for export and samples.
  Denoiser& ema() { return *ema_; }
  // The EMA of options.ema_gamma_candidates[i] (eval mode).
  Denoiser& candidate_ema(size_t i) { return *candidate_emas_.at(i); }
  Denoiser& net() { return *net_; }

 private:
  Trainer(const TrainOptions& options, std::shared_ptr<Denoiser> net, std::vector<std::shared_ptr<Denoiser>> emas,
          std::shared_ptr<Denoiser> teacher, torch::Tensor images, torch::Tensor labels);
  double LearningRate() const;
  double EmaBeta(double gamma) const;
  void UpdateEmas();
  // The main EMA first, then the candidates', each with its checkpoint prefix and gamma.
  struct TrackedEma {
    Denoiser* net;
    std::string prefix;
    double gamma;
  };
  std::vector<TrackedEma> Emas();

  TrainOptions options_;
  std::shared_ptr<Denoiser> net_, ema_, teacher_;
  std::vector<std::shared_ptr<Denoiser>> candidate_emas_;
  torch::Tensor images_, labels_;
  std::unique_ptr<torch::optim::Adam> optimizer_;
  int64_t step_ = 0;
};

}  // namespace tcm

#endif  // TCM_TRAINING_TRAINER_H_
