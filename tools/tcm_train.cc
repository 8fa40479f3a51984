// tcm-train: the three stages of the TCM recipe on the EDM2 U-Net.
//
//   tcm-train diffusion   --config tools/configs/edm2-fashion-mnist.pbtxt --out runs/edm
//   tcm-train consistency --init runs/edm/model --out runs/ct
//   tcm-train truncated   --init runs/ct/model --teacher runs/ct/model --out runs/tcm
//
// Each run directory holds checkpoint.pt (resumable with --resume), settings.json
// (the flags that shape the result, which --resume must repeat), log.jsonl (one
// line per progress report) and, when the run finishes, model/ (a model
// directory tcm-server serves) with sample grids.
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/marshalling.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/cpu_features.h"
#include "common/flags_usage.h"
#include "common/status_macros.h"
#include "common/tool_main.h"
#include "common/write_file.h"
#include "model/cpu_threads.h"
#include "model/model_config.h"
#include "model/model_repository.h"
#include "nlohmann/json.hpp"
#include "tools/time_flags.h"
#include "training/classifier.h"
#include "training/dataset.h"
#include "training/evaluation.h"
#include "training/run_settings.h"
#include "training/sample_grid.h"
#include "training/sampling_selection.h"
#include "training/trainer.h"

// Run and data.
ABSL_FLAG(std::string, out, "", "Run directory: checkpoint.pt, log.jsonl and, at the end, model/. Required.");
ABSL_FLAG(std::string, data, "fashion-mnist",
          "Training data: fashion-mnist, idx:IMAGES,LABELS or folder:DIR (class sub-directories of PNGs).");
ABSL_FLAG(int64_t, validation_images, 5000,
          "Images held out of --data for choosing sampling settings (its last ones; never trained on); 0 = none.");
ABSL_FLAG(std::string, config, "",
          "diffusion: the network's config.pbtxt when starting from random weights (instead of --init).");
ABSL_FLAG(std::string, init, "",
          "Model directory whose weights (and configuration) training starts from. Required by consistency "
          "(the diffusion model) and truncated (the stage-1 model).");
ABSL_FLAG(std::string, teacher, "", "truncated: the frozen stage-1 model directory, used below t'.");
ABSL_FLAG(bool, resume, false,
          "Continue from OUT/checkpoint.pt exactly where it stopped. The flags recorded in OUT/settings.json must "
          "be repeated; --steps, --threads, --log_every, --checkpoint_every, --eval_every and --eval_samples may "
          "change.");
ABSL_FLAG(int64_t, steps, 2000, "Optimisation steps in total (including those before a resume).");
ABSL_FLAG(int64_t, batch_size, 512, "Images per step.");
ABSL_FLAG(uint64_t, seed, 0, "Seed of every random draw (data order, times, noise, dropout).");
ABSL_FLAG(int, threads, 0, "Intra-op threads, 0 to 1024; 0 = one per core.");
ABSL_FLAG(std::string, precision, "auto",
          "Precision of the network body's forward and backward passes: fp32, bf16 (weights, Adam and the EMA stay "
          "float32; throughout, with a warning once the gap ratio passes 0.985) or auto (bf16 where the CPU has native "
          "bf16, fp32 elsewhere; the consistency stages switch to fp32 once the gap ratio passes 0.985, where bf16's "
          "rounding swamps the loss, docs/TRAINING.md).");
ABSL_FLAG(bool, channels_last, false,
          "Run the network body's activations and convolution weights in channels-last (in training slower than "
          "the default on this project's machine, docs/TRAINING.md).");
ABSL_FLAG(int64_t, log_every, 20, "Steps between progress lines (at least 1).");
ABSL_FLAG(int64_t, checkpoint_every, 200,
          "Steps between checkpoints (at least 1; also written at the end and on SIGINT/SIGTERM).");
// Optimiser and EMA.
ABSL_FLAG(double, lr, 1e-3, "Adam learning rate before decay.");
ABSL_FLAG(double, beta1, 0.9, "Adam beta1.");
ABSL_FLAG(double, beta2, 0.999, "Adam beta2.");
ABSL_FLAG(double, adam_eps, 1e-8, "Adam epsilon.");
ABSL_FLAG(int64_t, decay_iter, 0, "Learning rate lr / sqrt(max(step / decay_iter, 1)); 0 = no decay.");
ABSL_FLAG(int64_t, rampup_iter, 0, "Linear learning-rate ramp-up over this many steps; 0 = none.");
ABSL_FLAG(double, grad_clip, 1e6, "Maximum global gradient norm.");
ABSL_FLAG(std::string, ema_type, "constant",
          "EMA of the weights: constant (--ema_beta) or power (beta = (1 - 1/step)^(gamma + 1), EDM2's).");
ABSL_FLAG(double, ema_gamma, 16.97, "Power EMA exponent gamma.");
ABSL_FLAG(double, ema_beta, 0.9999, "Constant EMA decay.");
ABSL_FLAG(std::string, ema_gamma_candidates, "",
          "consistency, truncated: more power-EMA gammas (comma-separated) tracked beside --ema_gamma's "
          "(needs --ema_type=power); at the end the EMA of lowest FD at 1 step against the --validation_images is "
          "exported, recorded in OUT/selection.json. Empty = export --ema_gamma's EMA.");
ABSL_FLAG(double, dropout, 0.13,
          "consistency, truncated: dropout probability in the U-Net blocks (stage 2's teacher too).");
// Diffusion.
ABSL_FLAG(double, diffusion_mean, -1.2, "diffusion: mean of log sigma (EDM P_mean).");
ABSL_FLAG(double, diffusion_std, 1.2, "diffusion: standard deviation of log sigma (EDM P_std).");
// Consistency and truncated.
ABSL_FLAG(double, mean, -1.1, "consistency, truncated: location of log t (P_mean).");
ABSL_FLAG(double, std, 2.0, "consistency, truncated: scale of log t (P_std).");
ABSL_FLAG(std::string, tdist, "normal",
          "consistency, truncated: distribution of log t: normal or t (Student-t, heavy-tailed).");
ABSL_FLAG(double, df, 2.0, "consistency, truncated: degrees of freedom of --tdist=t.");
ABSL_FLAG(double, t_lower, 0.002,
          "consistency, truncated: smallest training t (truncated: t', at least --transition_t).");
ABSL_FLAG(double, t_upper, 80.0,
          "consistency, truncated: largest training t (at least the model's t_max, where 1-step sampling starts).");
ABSL_FLAG(double, q, 2.0, "consistency, truncated: gap decay factor: ratio = 1 - 1/q^(stage + 1).");
ABSL_FLAG(double, ratio_limit, 0.999, "consistency, truncated: largest gap ratio (at most 0.99999).");
ABSL_FLAG(int64_t, double_every, 50000,
          "consistency, truncated: steps between reductions of the gap dt (one schedule stage; the reference's "
          "500 ticks of 100 steps).");
ABSL_FLAG(int64_t, start_stage, 0, "consistency, truncated: schedule stage at step 0 (truncated: continue stage 1's).");
ABSL_FLAG(double, c, 0.0, "consistency, truncated: pseudo-Huber constant c; 0 = L2 distance.");
ABSL_FLAG(std::string, weighting, "default",
          "consistency, truncated: loss weighting: default (1/dt), cout, cout_sq, sqrt, one.");
ABSL_FLAG(double, boundary_prob, 0.05,
          "truncated: share of each batch placed at t = t' for the boundary loss (floor(batch_size x share) images; "
          "at least one unless 0).");
ABSL_FLAG(double, w_boundary, 1.0, "truncated: weight of the boundary loss.");
ABSL_FLAG(double, transition_t, 1.0, "truncated: t', below which the stage-1 model is the consistency function.");
// Sampling settings chosen on the held-out images (Fashion-MNIST-shaped models).
ABSL_FLAG(std::string, mid_t_candidates, "0.821,2,5,10,20",
          "consistency, truncated: second-step noise levels (mid_t) to choose from at the end, scored at 2 steps "
          "against the --validation_images (the evaluation classifier's accuracy and features): the lowest FD of "
          "those that beat 1 step on both measures (of all, when none does); the choice goes into "
          "OUT/model/config.pbtxt and OUT/selection.json. Empty = keep the default 0.821.");
ABSL_FLAG(int64_t, selection_samples, 2000,
          "Images drawn per candidate when choosing the EMA (at 1 step) and mid_t (at 2 steps), 2 to 1000000; image i "
          "is of class i % 10, seed 0.");
ABSL_FLAG(std::string, classifier, "tools/eval/fashion-mnist-classifier.safetensors",
          "The evaluation classifier's weights, for choosing the EMA and mid_t and for --eval_every.");
// Quality while training runs.
ABSL_FLAG(int64_t, eval_every, 0,
          "consistency, truncated: steps between scores of the EMA (--ema_gamma's or --ema_beta's) at 1 step against "
          "the --validation_images while training runs: class accuracy and FD by the evaluation classifier, printed "
          "and appended to OUT/eval.jsonl, to see the quality grow and catch a collapse early; the training itself "
          "is unchanged. 0 = none.");
ABSL_FLAG(int64_t, eval_samples, 500,
          "Images drawn for each --eval_every score, 2 to 1000000; image i is of class i % 10, seed 0.");

namespace tcm {
namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

// Once the last checkpoint is written, a signal ends the run at once: what is
// left (choosing the sampling settings, the export) is redone by --resume on
// the finished run, and the export is written to temporary directories, so no
// half-written model directory is left. The line is composed beforehand;
// write() and _exit() are safe in a signal handler.
char g_interrupted_line[2048];
void OnSignalAfterTraining(int) {
  const ssize_t ignored = ::write(STDERR_FILENO, g_interrupted_line, std::strlen(g_interrupted_line));
  (void)ignored;
  ::_exit(1);
}

// A comma-separated list of numbers from flag `name`; empty text = none.
absl::StatusOr<std::vector<double>> NumberList(const char* name, const std::string& text) {
  std::vector<double> values;
  if (text.empty()) return values;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    double v;
    if (!absl::SimpleAtod(part, &v))
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, ": a comma-separated list of numbers, got \"", text, "\""));
    values.push_back(v);
  }
  return values;
}

// Each candidate is scored once: a repeat (as the float32 a config holds, so
// 5 and 5.0000001 are one) would only cost time and mark two rows chosen.
// `also` (--ema_gamma's) is scored anyway and may not be named.
absl::Status RefuseRepeatedCandidates(const char* name, const std::vector<double>& values,
                                      std::optional<double> also = std::nullopt) {
  std::vector<float> seen;
  if (also) seen.push_back(static_cast<float>(*also));
  for (double v : values) {
    const float written = static_cast<float>(v);
    if (std::find(seen.begin(), seen.end(), written) == seen.end()) {
      seen.push_back(written);
      continue;
    }
    if (also && written == static_cast<float>(*also))
      return absl::InvalidArgumentError(absl::StrCat("--", name, ": ", absl::UnparseFlag(v),
                                                     " is --ema_gamma's, which is scored anyway; name the others"));
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": ", absl::UnparseFlag(v), " is named twice (as a float32)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<TrainOptions> OptionsFromFlags(Stage stage) {
  TrainOptions o;
  o.stage = stage;
  o.batch_size = absl::GetFlag(FLAGS_batch_size);
  o.lr = absl::GetFlag(FLAGS_lr);
  o.beta1 = absl::GetFlag(FLAGS_beta1);
  o.beta2 = absl::GetFlag(FLAGS_beta2);
  o.adam_eps = absl::GetFlag(FLAGS_adam_eps);
  o.decay_iter = absl::GetFlag(FLAGS_decay_iter);
  o.rampup_iter = absl::GetFlag(FLAGS_rampup_iter);
  o.grad_clip = absl::GetFlag(FLAGS_grad_clip);
  o.ema_type = absl::GetFlag(FLAGS_ema_type);
  o.ema_gamma = absl::GetFlag(FLAGS_ema_gamma);
  o.ema_beta = absl::GetFlag(FLAGS_ema_beta);
  TCM_ASSIGN_OR_RETURN(o.ema_gamma_candidates,
                       NumberList("ema_gamma_candidates", absl::GetFlag(FLAGS_ema_gamma_candidates)));
  TCM_RETURN_IF_ERROR(CheckEmaOptions(o));
  // A run begun with repeats tracks an EMA for each: it is resumed as it began.
  if (!absl::GetFlag(FLAGS_resume))
    TCM_RETURN_IF_ERROR(RefuseRepeatedCandidates("ema_gamma_candidates", o.ema_gamma_candidates, o.ema_gamma));
  if (stage == Stage::kDiffusion && !o.ema_gamma_candidates.empty())
    return absl::InvalidArgumentError(
        "--ema_gamma_candidates: only for the consistency and truncated stages (the EMA is chosen by its 1-step "
        "samples)");
  o.diffusion.p_mean = absl::GetFlag(FLAGS_diffusion_mean);
  o.diffusion.p_std = absl::GetFlag(FLAGS_diffusion_std);
  auto& c = o.consistency;
  TCM_ASSIGN_OR_RETURN(c.time.kind, ParseTimeDistributionKind(absl::GetFlag(FLAGS_tdist), "--tdist"));
  c.time.mean = absl::GetFlag(FLAGS_mean);
  c.time.std = absl::GetFlag(FLAGS_std);
  c.time.df = absl::GetFlag(FLAGS_df);
  c.time.t_lower = absl::GetFlag(FLAGS_t_lower);
  c.time.t_upper = absl::GetFlag(FLAGS_t_upper);
  if (!(c.time.t_lower > 0 && c.time.t_lower < c.time.t_upper))
    return absl::InvalidArgumentError("--t_lower, --t_upper: need 0 < t_lower < t_upper");
  if (!(c.time.std > 0) || !(c.time.df > 0)) return absl::InvalidArgumentError("--std and --df: must be positive");
  c.huber_c = absl::GetFlag(FLAGS_c);
  TCM_ASSIGN_OR_RETURN(c.weighting, ParseLossWeighting(absl::GetFlag(FLAGS_weighting), "--weighting"));
  c.boundary_prob = absl::GetFlag(FLAGS_boundary_prob);
  o.q = absl::GetFlag(FLAGS_q);
  o.ratio_limit = absl::GetFlag(FLAGS_ratio_limit);
  o.double_every = absl::GetFlag(FLAGS_double_every);
  if (o.double_every < 1) return absl::InvalidArgumentError("--double_every: must be at least 1");
  o.start_stage = absl::GetFlag(FLAGS_start_stage);
  o.w_boundary = absl::GetFlag(FLAGS_w_boundary);
  o.transition_t = absl::GetFlag(FLAGS_transition_t);
  TCM_RETURN_IF_ERROR(CheckTrainOptions(o));
  if (stage == Stage::kTruncated && c.time.t_lower < o.transition_t)
    return absl::InvalidArgumentError(absl::StrCat("--t_lower (", c.time.t_lower, ") must be at least --transition_t (",
                                                   o.transition_t, "): stage 2 trains over [t', t_max]"));
  return o;
}

// The network to train: --init's weights and configuration, or --config with
// random weights (diffusion only). Dropout is set from --dropout.
absl::StatusOr<std::shared_ptr<Denoiser>> StartingNetwork(Stage stage, std::vector<std::string>* labels) {
  const std::string init = absl::GetFlag(FLAGS_init), config_path = absl::GetFlag(FLAGS_config);
  if (stage != Stage::kDiffusion && !config_path.empty())
    return absl::InvalidArgumentError(absl::StrCat("--config: only for the diffusion stage; ", StageName(stage),
                                                   " takes its network and weights from --init"));
  if (init.empty() == config_path.empty())
    return absl::InvalidArgumentError(stage == Stage::kDiffusion
                                          ? "give one of --config (random start) or --init (a model directory)"
                                          : "--init: required (the model directory training starts from)");
  v1::ModelConfig config;
  TensorMap weights;
  if (!init.empty()) {
    TCM_ASSIGN_OR_RETURN(ModelDirectory dir, ReadModelDirectory(init));
    config = dir.config;
    weights = std::move(dir.weights);
    *labels = dir.labels;
  } else {
    TCM_ASSIGN_OR_RETURN(config, ReadModelConfigFile(config_path));
  }
  if (config.has_transition_t())
    return absl::InvalidArgumentError(absl::StrCat(
        "--init: ", init, " is a composed model (transition_t is set); give the single network's directory"));
  if (config.architecture() != kEdm2UNet)
    return absl::InvalidArgumentError(
        absl::StrCat("tcm-train trains the EDM2 U-Net; the model is \"", config.architecture(), "\""));
  config.mutable_edm2()->set_dropout(stage == Stage::kDiffusion ? 0.0f : float(absl::GetFlag(FLAGS_dropout)));
  TCM_ASSIGN_OR_RETURN(auto net, Denoiser::Create(config));
  if (!weights.empty()) TCM_RETURN_IF_ERROR(net->LoadStateDict(weights, init));
  return net;
}

// Flags that shape a run's result: recorded in OUT/settings.json when the run
// begins, required unchanged by --resume. The rest only pace the run.
constexpr const char* kResultFlags[] = {"data",
                                        "validation_images",
                                        "config",
                                        "init",
                                        "teacher",
                                        "seed",  // what and from where
                                        "precision",
                                        "channels_last",  // arithmetic
                                        "batch_size",
                                        "lr",
                                        "beta1",
                                        "beta2",
                                        "adam_eps",
                                        "decay_iter",
                                        "rampup_iter",
                                        "grad_clip",  // optimiser
                                        "ema_type",
                                        "ema_gamma",
                                        "ema_beta",
                                        "ema_gamma_candidates",
                                        "dropout",  // EMA, network
                                        "diffusion_mean",
                                        "diffusion_std",
                                        "mean",
                                        "std",
                                        "tdist",
                                        "df",
                                        "t_lower",
                                        "t_upper",  // noise levels
                                        "q",
                                        "ratio_limit",
                                        "double_every",
                                        "start_stage",
                                        "c",
                                        "weighting",  // consistency loss
                                        "boundary_prob",
                                        "w_boundary",
                                        "transition_t"};  // truncated stage

// A run recorded before these settings existed ran with these values.
constexpr std::pair<const char*, const char*> kSettingsBeforeTheyExisted[] = {
    {"validation_images", "0"}, {"precision", "fp32"}, {"channels_last", "false"}, {"ema_gamma_candidates", ""}};

// Also recorded: whether the CPU that began the run has native bf16, which is
// what --precision auto chose. Not compared by --resume (a run may move to
// another machine), but a move that changes auto's choice is announced.
constexpr char kCpuBf16Setting[] = "cpu_bf16_native";

// Also recorded: digests of the contents of the files that flags name (a flag
// records only the path), compared by --resume where the path is the same. A
// run recorded before a digest existed adopts this command's.
struct InputDigest {
  const char* setting;  // its key in settings.json
  const char* flag;
  std::vector<std::string> (*files)(const std::string& flag_value);
  // Values whose files record one digest of them all (FilesDigest: their
  // paths too) rather than one each; none when null.
  bool (*digested_as_one)(const std::string& flag_value) = nullptr;
};
bool IsFolderDataSet(const std::string& spec) { return absl::StartsWith(spec, "folder:"); }
const InputDigest kInputDigests[] = {
    {"config_digest", "config", [](const std::string& path) { return std::vector<std::string>{path}; }},
    {"init_digest", "init", ModelNetworkFiles},
    {"teacher_digest", "teacher", ModelNetworkFiles},
    {"data_digest", "data", DataSetFiles, IsFolderDataSet},
};

// Also recorded for folder: data: the rules its images are read by, which
// decide the classes and the held-out split. A run begun under other rules
// (class after class; hidden folders as classes, only lower-case .png) cannot
// be resumed.
constexpr char kFolderOrderSetting[] = "folder_order";
constexpr char kFolderOrder[] = "classes in turn, hidden entries skipped, .png in any case";

// The digest of a file that could not be read (refused later, where it is read).
constexpr char kUnreadable[] = "unreadable";

RunSettings CommandRunSettings(Stage stage) {
  RunSettings settings = {{"stage", StageName(stage)}, {kCpuBf16Setting, CpuHasNativeBf16() ? "true" : "false"}};
  for (const char* name : kResultFlags) settings[name] = absl::FindCommandLineFlag(name)->CurrentValue();
  if (IsFolderDataSet(settings.at("data"))) settings[kFolderOrderSetting] = kFolderOrder;
  for (const InputDigest& input : kInputDigests) {
    const std::string value = settings.at(input.flag);
    const std::vector<std::string> files = value.empty() ? std::vector<std::string>{} : input.files(value);
    if (files.empty()) continue;
    // An unreadable file is refused later, where it is read.
    if (input.digested_as_one != nullptr && input.digested_as_one(value)) {
      absl::StatusOr<std::string> digest = FilesDigest(files);
      settings[input.setting] = digest.ok() ? *digest : kUnreadable;
      continue;
    }
    std::vector<std::string> digests;
    for (const std::string& file : files) {
      absl::StatusOr<std::string> digest = FileDigest(file);
      digests.push_back(digest.ok() ? *digest : kUnreadable);
    }
    settings[input.setting] = absl::StrJoin(digests, " ");
  }
  return settings;
}

// A --precision auto run resumed on a CPU of the other kind changes arithmetic
// wherever auto would choose bf16: it continues, with a line saying so.
void AnnounceAutoPrecisionMove(const RunSettings& recorded, const RunSettings& now) {
  const auto began = recorded.find(kCpuBf16Setting);
  if (now.at("precision") != "auto" || began == recorded.end() || began->second == now.at(kCpuBf16Setting)) return;
  if (began->second == "true")
    std::printf(
        "tcm-train: --precision auto: this run began on a CPU with native bf16 and this one has none: its bf16 "
        "steps run in float32 from here, so it will not match an uninterrupted run\n");
  else
    std::printf(
        "tcm-train: --precision auto: this run began on a CPU without native bf16 and this one has it: its "
        "steps run in bf16 from here wherever auto allows it, so it will not match an uninterrupted run\n");
}

// A new run refuses a directory that holds a run already (it would overwrite
// that run's checkpoint).
absl::Status RefuseExistingRun(const std::string& out) {
  if (!std::filesystem::exists(out + "/checkpoint.pt")) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "--out: ", out, " holds a run already (checkpoint.pt); continue it with --resume, or give another directory"));
}

// Makes a new run's directory and records its settings there.
absl::Status RecordNewRunSettings(const std::string& out, Stage stage) {
  if (std::error_code ec; !std::filesystem::create_directories(out, ec) && ec)
    return absl::InvalidArgumentError(absl::StrCat("--out: cannot make the run directory ", out, ": ", ec.message()));
  return WriteRunSettings(out + "/settings.json", CommandRunSettings(stage));
}

// --resume needs the checkpoint and the settings recorded when the run began,
// repeated. A run begun before settings.json (or one of the digests) existed
// adopts this command's: returned, to be recorded once its checkpoint has
// loaded, so that a failed resume records nothing.
absl::StatusOr<std::optional<RunSettings>> CheckResumedRunSettings(const std::string& out, Stage stage) {
  const std::string path = out + "/settings.json", checkpoint = out + "/checkpoint.pt";
  const RunSettings now = CommandRunSettings(stage);
  if (!std::filesystem::exists(checkpoint))
    return absl::InvalidArgumentError(absl::StrCat("--resume: ", checkpoint, " does not exist"));
  absl::StatusOr<RunSettings> recorded = ReadRunSettings(path);
  if (absl::IsNotFound(recorded.status())) {
    std::printf("tcm-train: %s has no settings.json (begun by an older tcm-train); recording this command's\n",
                out.c_str());
    return now;
  }
  if (!recorded.ok()) return recorded.status();
  // Settings added since a run began take the value that run had.
  for (const auto& [name, before] : kSettingsBeforeTheyExisted) recorded->emplace(name, before);
  if (recorded->count("stage") && recorded->at("stage") != now.at("stage"))
    return absl::InvalidArgumentError(absl::StrCat("--out: ", out, " is a run of the ", recorded->at("stage"),
                                                   " stage, not the ", now.at("stage"), " stage"));
  if (now.count(kFolderOrderSetting) && recorded->count("data") && recorded->at("data") == now.at("data") &&
      (!recorded->count(kFolderOrderSetting) || recorded->at(kFolderOrderSetting) != kFolderOrder))
    return absl::InvalidArgumentError(absl::StrCat(
        "--resume: ", out, " began when ", now.at("data"), " was read ",
        recorded->count(kFolderOrderSetting) ? absl::StrCat("by other rules (", recorded->at(kFolderOrderSetting), ")")
                                             : "class after class",
        "; this tcm-train reads it ", kFolderOrder,
        ", which can make other classes or hold out other images. Finish the run with the tcm-train that began "
        "it, or start a new --out"));
  RunSettings recorded_compared = *recorded, now_compared = now;
  for (const char* setting : {kCpuBf16Setting, kFolderOrderSetting}) {
    recorded_compared.erase(setting);
    now_compared.erase(setting);
  }
  // The contents of the same files (their paths are compared as flags).
  std::vector<std::string> content_changes;
  bool adopted_a_digest = false;
  for (const InputDigest& input : kInputDigests) {
    const auto digest_of = [&](const RunSettings& settings) {
      const auto it = settings.find(input.setting);
      return it == settings.end() ? std::string() : it->second;
    };
    const std::string recorded_digest = digest_of(*recorded), now_digest = digest_of(now);
    recorded_compared.erase(input.setting);
    now_compared.erase(input.setting);
    if (recorded_digest.empty() && !now_digest.empty()) {  // a run recorded before the digest existed adopts it
      (*recorded)[input.setting] = now_digest;
      adopted_a_digest = true;
    } else if (!recorded_digest.empty() && !now_digest.empty() && recorded_digest != now_digest &&
               !absl::StrContains(now_digest, kUnreadable) && recorded->count(input.flag) &&
               recorded->at(input.flag) == now.at(input.flag)) {  // an unreadable file: its reader names it
      content_changes.push_back(absl::StrCat("--", input.flag, ": the contents of ", now.at(input.flag),
                                             " changed since the run began (", recorded_digest, ", now ", now_digest,
                                             ")"));
    }
  }
  std::vector<std::string> changes = DescribeSettingChanges(recorded_compared, now_compared);
  changes.insert(changes.end(), content_changes.begin(), content_changes.end());
  if (changes.empty()) {
    AnnounceAutoPrecisionMove(*recorded, now);
    if (adopted_a_digest) return *recorded;
    return std::nullopt;
  }
  return absl::InvalidArgumentError(absl::StrCat("--resume: ", out, " was begun with other settings (", path,
                                                 "): ", absl::StrJoin(changes, "; "),
                                                 ". Repeat the run's values, or start a new --out"));
}

// --precision auto leaves bf16 for float32 once the consistency gap ratio
// passes this: the loss compares two passes a gap apart, and bf16's rounding
// in each outweighs their difference when the gap is small (the truncated
// stage degraded in bf16 at 0.988 and collapsed at 0.996 and 0.999; stage 1
// trained well up to its schedule stage 5, 1 - 1/2^6 = 0.984375).
constexpr double kBf16MaxGapRatio = 0.985;

// --precision as the body's dtype: auto is bf16 where the CPU has native bf16.
absl::StatusOr<torch::ScalarType> TrainingDtype() {
  const std::string precision = absl::GetFlag(FLAGS_precision);
  if (precision == "fp32") return torch::kFloat32;
  if (precision == "bf16") return torch::kBFloat16;
  if (precision == "auto") return CpuHasNativeBf16() ? torch::kBFloat16 : torch::kFloat32;
  return absl::InvalidArgumentError(absl::StrCat("--precision: must be auto, fp32 or bf16, got \"", precision, "\""));
}

std::string Duration(double seconds) {
  const int64_t s = int64_t(seconds);
  return absl::StrFormat("%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60);
}

// Writes a model directory and, unless it is a diffusion model (whose 1-2 step
// samples are not its purpose), sample grids at 1 and 2 steps.
// Written to DIR.tmp and renamed, so that DIR is never half-written (an
// earlier export of the same run, resumed when finished, is replaced).
absl::Status WriteModel(const ModelDirectory& model, const std::string& dir, bool grids) {
  const std::string tmp = dir + ".tmp";
  std::error_code error;
  std::filesystem::remove_all(tmp, error);  // left by an interrupted export
  TCM_RETURN_IF_ERROR(WriteModelDirectory(tmp, model.config, model.weights, model.labels));
  if (grids) {
    TCM_ASSIGN_OR_RETURN(auto replica, BuildReplica(model));
    TCM_RETURN_IF_ERROR(WriteModelSampleGrids(*replica, {1, 2}, tmp));
  }
  std::filesystem::remove_all(dir, error);
  if (!error) std::filesystem::rename(tmp, dir, error);
  if (error) return absl::DataLossError(absl::StrCat(dir, ": cannot replace it with ", tmp, ": ", error.message()));
  return absl::OkStatus();
}

// What choosing the sampling settings needs: the mid_t candidates, the EMA
// gammas (--ema_gamma's first, then the candidates') and the evaluation classifier.
struct SamplingChoice {
  std::vector<double> mid_t_candidates;
  std::vector<double> ema_gammas;  // empty: the EMA is not chosen
  std::shared_ptr<FashionClassifier> classifier;
  FeatureStatistics reference;  // of the held-out images
};

// Whether `c`'s samples can be scored on `held_out` images by the evaluation
// classifier: at least 2 of them and a Fashion-MNIST-shaped model.
bool ScorableOnHeldOut(const v1::ModelConfig& c, int64_t held_out) {
  return held_out >= 2 && c.img_channels() == 1 && c.img_resolution() == kClassifierResolution &&
         c.num_classes() == kClassifierClasses;
}

// --classifier loaded, and the held-out images' statistics in its feature space.
absl::Status LoadClassifierAndReference(const LabeledImages& held_out, std::shared_ptr<FashionClassifier>* classifier,
                                        FeatureStatistics* reference) {
  auto loaded = LoadClassifier(absl::GetFlag(FLAGS_classifier));
  if (!loaded.ok())
    return absl::Status(loaded.status().code(), absl::StrCat("--classifier: ", loaded.status().message()));
  *classifier = *std::move(loaded);
  TCM_ASSIGN_OR_RETURN(torch::Tensor images, ToModelInput(held_out.images, kClassifierResolution));
  *reference = ComputeFeatureStatistics(ClassifyInChunks(**classifier, images, /*chunk=*/5000, {}).features);
  return absl::OkStatus();
}

// Checks, before training starts, what choosing the sampling settings needs:
// the candidates, held-out images, a Fashion-MNIST-shaped model and the
// classifier. Empty (with a line saying why) when nothing is chosen.
absl::StatusOr<std::optional<SamplingChoice>> PrepareSamplingChoice(const TrainOptions& options,
                                                                    const v1::ModelConfig& c,
                                                                    const LabeledImages& held_out) {
  SamplingChoice choice;
  TCM_ASSIGN_OR_RETURN(choice.mid_t_candidates, NumberList("mid_t_candidates", absl::GetFlag(FLAGS_mid_t_candidates)));
  TCM_RETURN_IF_ERROR(RefuseRepeatedCandidates("mid_t_candidates", choice.mid_t_candidates));
  if (!options.ema_gamma_candidates.empty()) {
    choice.ema_gammas = {options.ema_gamma};
    choice.ema_gammas.insert(choice.ema_gammas.end(), options.ema_gamma_candidates.begin(),
                             options.ema_gamma_candidates.end());
  }
  if (options.stage == Stage::kDiffusion || (choice.mid_t_candidates.empty() && choice.ema_gammas.empty()))
    return std::nullopt;
  for (double mid_t : choice.mid_t_candidates)
    TCM_RETURN_IF_ERROR(CheckTimeFlag("--mid_t_candidates: each value", mid_t, c.t_max()));
  if (!ScorableOnHeldOut(c, held_out.images.size(0))) {
    std::printf(
        "tcm-train: mid_t stays %g and the EMA --ema_gamma's: choosing them needs --validation_images (at least "
        "2) and a Fashion-MNIST-shaped model (1 channel, 32x32, 10 classes)\n",
        c.mid_t());
    return std::nullopt;
  }
  TCM_RETURN_IF_ERROR(LoadClassifierAndReference(held_out, &choice.classifier, &choice.reference));
  return choice;
}

// What scoring the EMA while training runs needs (--eval_every).
struct TrainingEval {
  int64_t every = 0;
  SamplingPlan plan;
  std::shared_ptr<FashionClassifier> classifier;
  FeatureStatistics reference;  // of the held-out images
};

// Checks --eval_every and what it needs before training starts: empty when
// it is 0; an InvalidArgument error naming the flag when the stage or the
// model cannot be scored. Reuses the sampling choice's classifier and
// statistics, if any.
absl::StatusOr<std::optional<TrainingEval>> PrepareTrainingEval(Stage stage, const v1::ModelConfig& c,
                                                                const LabeledImages& held_out,
                                                                const std::optional<SamplingChoice>& choice) {
  TrainingEval eval;
  eval.every = absl::GetFlag(FLAGS_eval_every);
  if (eval.every < 0)
    return absl::InvalidArgumentError(absl::StrCat("--eval_every: must be 0 or more, got ", eval.every));
  if (eval.every == 0) return std::nullopt;
  if (stage == Stage::kDiffusion)
    return absl::InvalidArgumentError(
        "--eval_every: only for the consistency and truncated stages (it scores 1-step samples)");
  eval.plan.num = absl::GetFlag(FLAGS_eval_samples);
  if (!ScorableOnHeldOut(c, held_out.images.size(0)))
    return absl::InvalidArgumentError(
        "--eval_every: needs --validation_images (at least 2) and a Fashion-MNIST-shaped model (1 channel, 32x32, 10 "
        "classes)");
  if (choice) {
    eval.classifier = choice->classifier;
    eval.reference = choice->reference;
  } else {
    TCM_RETURN_IF_ERROR(LoadClassifierAndReference(held_out, &eval.classifier, &eval.reference));
  }
  return eval;
}

// `ema` as a model directory: its configuration without training-only
// settings, a copy of its weights, and `labels`.
ModelDirectory ExportedModel(Denoiser& ema, const std::vector<std::string>& labels) {
  ModelDirectory model;
  model.config = ema.config();
  model.config.mutable_edm2()->clear_dropout();
  model.config.clear_name();  // served under the name of the directory it is copied to
  for (const auto& [key, value] : ema.StateDict()) model.weights.emplace(key, value.detach().clone());
  model.labels = labels;
  return model;
}

// Chooses on the held-out images which EMA `model` takes its weights from
// (see --ema_gamma_candidates; `model` holds the main EMA's) and its mid_t
// (see --mid_t_candidates), and writes OUT/selection.json.
absl::Status ChooseSamplingSettings(const SamplingChoice& choice, Trainer& trainer, ModelDirectory* model,
                                    torch::ScalarType dtype, const std::string& out) {
  FashionClassifier& classifier = *choice.classifier;
  const FeatureStatistics& reference = choice.reference;
  SamplingPlan plan;
  plan.num = absl::GetFlag(FLAGS_selection_samples);
  nlohmann::ordered_json json;
  json["held_out_images"] = reference.count;
  json["samples_per_candidate"] = plan.num;
  std::optional<StepScore> one_step;  // the exported EMA's at 1 step, once measured
  if (!choice.ema_gammas.empty()) {
    std::printf(
        "tcm-train: choosing the EMA among gammas %s by FD at 1 step, %lld images each, against %lld held-out "
        "images\n",
        absl::StrJoin(choice.ema_gammas, ",").c_str(), (long long)plan.num, (long long)reference.count);
    std::fflush(stdout);
    std::vector<ModelDirectory> emas = {*model};
    for (size_t i = 1; i < choice.ema_gammas.size(); ++i)
      emas.push_back(ExportedModel(trainer.candidate_ema(i - 1), model->labels));
    TCM_ASSIGN_OR_RETURN(EmaSelection selection,
                         SelectEmaProfile(emas, choice.ema_gammas, dtype, plan, classifier, reference, {}));
    json["ema_gamma"] = selection.scores[selection.chosen].gamma;
    json["ema_criterion"] = "lowest FD at 1 step against the held-out images";
    json["ema_candidates"] = nlohmann::ordered_json::array();
    for (size_t i = 0; i < selection.scores.size(); ++i) {
      const EmaScore& s = selection.scores[i];
      std::printf("  gamma %-6g accuracy %.4f  FD %.4f%s\n", s.gamma, s.accuracy, s.fd,
                  i == selection.chosen ? "  (chosen)" : "");
      json["ema_candidates"].push_back({{"gamma", s.gamma}, {"class_accuracy", s.accuracy}, {"fd", s.fd}});
    }
    std::fflush(stdout);
    model->weights = std::move(emas[selection.chosen].weights);
    one_step = StepScore{selection.scores[selection.chosen].accuracy, selection.scores[selection.chosen].fd};
  }
  if (!choice.mid_t_candidates.empty()) {
    std::printf(
        "tcm-train: choosing mid_t among %s by FD at 2 steps, of those that beat 1 step on both measures, %lld "
        "images each, against %lld held-out images\n",
        absl::GetFlag(FLAGS_mid_t_candidates).c_str(), (long long)plan.num, (long long)reference.count);
    std::fflush(stdout);
    TCM_ASSIGN_OR_RETURN(MidTSelection selection, SelectMidT(*model, choice.mid_t_candidates, "--mid_t_candidates",
                                                             dtype, plan, classifier, reference, {}, one_step));
    json["mid_t"] = selection.mid_t;
    json["criterion"] =
        "lowest FD at 2 steps against the held-out images among the candidates that beat 1 step on both measures "
        "(class accuracy at least as high, FD lower); among all candidates when none does";
    json["beats_one_step"] = selection.beats_one_step;
    json["one_step"] = {{"class_accuracy", selection.one_step.accuracy}, {"fd", selection.one_step.fd}};
    json["candidates"] = nlohmann::ordered_json::array();
    std::printf("  1 step       accuracy %.4f  FD %.4f\n", selection.one_step.accuracy, selection.one_step.fd);
    for (const MidTScore& s : selection.scores) {
      std::printf("  mid_t %-6g accuracy %.4f  FD %.4f%s%s\n", s.mid_t, s.accuracy, s.fd,
                  BeatsOneStep(selection.one_step, s) ? "  beats 1 step" : "",
                  s.mid_t == selection.mid_t ? "  (chosen)" : "");
      json["candidates"].push_back({{"mid_t", s.mid_t}, {"class_accuracy", s.accuracy}, {"fd", s.fd}});
    }
    std::fflush(stdout);
    model->config.set_mid_t(float(selection.mid_t));
  }
  return WriteFileAtomically(out + "/selection.json", json.dump(2) + "\n");
}

// Scores the EMA at 1 step (--eval_every), prints the score and appends it to
// `log`. The random generator is left as found, so training goes on unchanged.
absl::Status EvaluateWhileTraining(const TrainingEval& eval, Trainer& trainer, const std::vector<std::string>& labels,
                                   torch::ScalarType dtype, std::ostream& log) {
  const torch::Tensor generator = CpuGeneratorState();
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<StepScore> score =
      ScoreOneStep(ExportedModel(trainer.ema(), labels), dtype, eval.plan, *eval.classifier, eval.reference, {});
  SetCpuGeneratorState(generator);
  if (!score.ok()) return score.status();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("eval at step %lld: 1 step accuracy %.4f  FD %.4f  (%lld samples against %lld held-out images, %.1f s)\n",
              (long long)trainer.step(), score->accuracy, score->fd, (long long)eval.plan.num,
              (long long)eval.reference.count, seconds);
  std::fflush(stdout);
  log << absl::StrFormat(
             "{\"step\": %d, \"steps\": 1, \"class_accuracy\": %.6g, \"fd\": %.6g, "
             "\"samples\": %d, \"held_out_images\": %d, \"seconds\": %.4g}\n",
             trainer.step(), score->accuracy, score->fd, eval.plan.num, eval.reference.count, seconds)
      << std::flush;
  if (!log) return absl::DataLossError("eval.jsonl: cannot write");
  return absl::OkStatus();
}

// Exports the EMA network (the chosen one, where there is a choice) to
// OUT/model. The truncated stage also writes OUT/model-composed: TCM's
// composition with the stage-1 teacher below t'.
absl::Status Export(Trainer& trainer, Stage stage, const std::string& out, const std::vector<std::string>& labels,
                    const ModelDirectory* teacher, double transition_t, const std::optional<SamplingChoice>& choice,
                    torch::ScalarType dtype) {
  ModelDirectory model = ExportedModel(trainer.ema(), labels);
  const float default_mid_t = model.config.mid_t();
  if (choice) TCM_RETURN_IF_ERROR(ChooseSamplingSettings(*choice, trainer, &model, dtype, out));
  TCM_RETURN_IF_ERROR(WriteModel(model, out + "/model", stage != Stage::kDiffusion));
  if (teacher == nullptr) return absl::OkStatus();
  model.path = out + "/model";
  model.config.set_mid_t(default_mid_t);  // chosen for the network alone, not the composition
  TCM_ASSIGN_OR_RETURN(ModelDirectory composed, ComposeTruncated(model, *teacher, transition_t));
  return WriteModel(composed, out + "/model-composed", true);
}

// The consistency stages train up to --t_upper; 1-step sampling starts at the
// model's t_max, which training must reach.
// The truncated stage's t' must lie inside (0, t_max), where the composed
// model hands over from one network to the other.
absl::Status CheckTimeRange(Stage stage, const TrainOptions& options, const v1::ModelConfig& config) {
  // As float32, the type of the model's t_max (and of the composed model's transition_t).
  if (stage == Stage::kTruncated)
    TCM_RETURN_IF_ERROR(CheckTimeFlag("--transition_t:", options.transition_t, config.t_max()));
  if (stage == Stage::kDiffusion || static_cast<float>(options.consistency.time.t_upper) >= config.t_max())
    return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("--t_upper (", options.consistency.time.t_upper,
                                                 ") must be at least the model's t_max (", config.t_max(),
                                                 "), where 1-step sampling starts"));
}

// Stage 2's teacher is composed with the trained network at the end: one
// network of the same shape, checked before training rather than at export.
absl::Status CheckTeacher(const ModelDirectory& teacher, const v1::ModelConfig& student) {
  if (teacher.config.has_transition_t())
    return absl::InvalidArgumentError(
        absl::StrCat("--teacher: ", teacher.path,
                     " is a composed model (transition_t is set); give the stage-1 network's directory"));
  if (const std::string difference = NetworkDifference(student, "--init", teacher.config, "--teacher");
      !difference.empty())
    return absl::InvalidArgumentError(absl::StrCat("--teacher: ", teacher.path,
                                                   " holds another network than --init's (", difference,
                                                   "); stage 2 is composed with a teacher of the same network"));
  return absl::OkStatus();
}

// Images drawn for one score (--selection_samples, --eval_samples): a
// hundred times the Fashion-MNIST test set; each image's features are kept.
constexpr int64_t kMaxScoredSamples = 1000000;

// The numeric flags that are not training options, each in its range (NaN
// never): one line naming the flag, its range and the value given.
absl::Status CheckToolFlags() {
  const int64_t steps = absl::GetFlag(FLAGS_steps);
  if (steps < 1 || steps > kMaxSteps)
    return absl::InvalidArgumentError(absl::StrCat("--steps: must be in [1, ", kMaxSteps, "], got ", steps));
  TCM_RETURN_IF_ERROR(CheckThreadsFlag(absl::GetFlag(FLAGS_threads)));
  const double dropout = absl::GetFlag(FLAGS_dropout);
  if (!(dropout >= 0 && dropout < 1))
    return absl::InvalidArgumentError(absl::StrCat("--dropout: must be in [0, 1), got ", dropout));
  const int64_t validation_images = absl::GetFlag(FLAGS_validation_images);
  if (validation_images < 0)
    return absl::InvalidArgumentError(absl::StrCat("--validation_images: must be 0 or more, got ", validation_images));
  constexpr int64_t kUnbounded = std::numeric_limits<int64_t>::max();
  for (const auto& [name, value, least, most] :
       {std::tuple<const char*, int64_t, int64_t, int64_t>{"log_every", absl::GetFlag(FLAGS_log_every), 1, kUnbounded},
        {"checkpoint_every", absl::GetFlag(FLAGS_checkpoint_every), 1, kUnbounded},
        {"selection_samples", absl::GetFlag(FLAGS_selection_samples), 2, kMaxScoredSamples},
        {"eval_every", absl::GetFlag(FLAGS_eval_every), 0, kUnbounded},
        {"eval_samples", absl::GetFlag(FLAGS_eval_samples), 2, kMaxScoredSamples}}) {
    if (value >= least && value <= most) continue;
    if (most != kUnbounded)
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, ": must be in [", least, ", ", most, "], got ", value));
    return absl::InvalidArgumentError(least == 0
                                          ? absl::StrCat("--", name, ": must be 0 or more, got ", value)
                                          : absl::StrCat("--", name, ": must be at least ", least, ", got ", value));
  }
  return absl::OkStatus();
}

absl::Status Run(const std::string& stage_name) {
  TCM_ASSIGN_OR_RETURN(Stage stage, ParseStage(stage_name));
  TCM_RETURN_IF_ERROR(CheckToolFlags());
  TCM_ASSIGN_OR_RETURN(TrainOptions options, OptionsFromFlags(stage));
  TCM_ASSIGN_OR_RETURN(torch::ScalarType dtype, TrainingDtype());
  const bool auto_precision = absl::GetFlag(FLAGS_precision) == "auto";
  const bool channels_last = absl::GetFlag(FLAGS_channels_last);
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return absl::InvalidArgumentError("--out: required (the run directory)");
  const bool resume = absl::GetFlag(FLAGS_resume);
  std::optional<RunSettings> adopted_settings;
  if (resume) {
    TCM_ASSIGN_OR_RETURN(adopted_settings, CheckResumedRunSettings(out, stage));
  } else {
    TCM_RETURN_IF_ERROR(RefuseExistingRun(out));
  }
  ConfigureCpuThreads(absl::GetFlag(FLAGS_threads));
  torch::manual_seed(absl::GetFlag(FLAGS_seed));

  // A new run's inputs are checked before its directory is made (below).
  std::vector<std::string> labels;
  TCM_ASSIGN_OR_RETURN(auto net, StartingNetwork(stage, &labels));
  TCM_RETURN_IF_ERROR(CheckTimeRange(stage, options, net->config()));
  std::shared_ptr<Denoiser> teacher;
  ModelDirectory teacher_dir;
  if (stage == Stage::kTruncated) {
    const std::string path = absl::GetFlag(FLAGS_teacher);
    if (path.empty()) return absl::InvalidArgumentError("--teacher: required by the truncated stage");
    TCM_ASSIGN_OR_RETURN(teacher_dir, ReadModelDirectory(path));
    TCM_RETURN_IF_ERROR(CheckTeacher(teacher_dir, net->config()));
    // The teacher runs with the student's dropout (and masks), as in the reference.
    ModelDirectory with_dropout = teacher_dir;
    with_dropout.config.mutable_edm2()->set_dropout(float(absl::GetFlag(FLAGS_dropout)));
    TCM_ASSIGN_OR_RETURN(teacher, BuildReplica(with_dropout));
    teacher->SetCompute(dtype, channels_last);
  }
  net->SetCompute(dtype, channels_last);
  TCM_ASSIGN_OR_RETURN(LabeledImages all, LoadDataset(absl::GetFlag(FLAGS_data), Split::kTrain));
  TCM_ASSIGN_OR_RETURN(TrainValidation data,
                       HoldOutValidation(all, absl::GetFlag(FLAGS_validation_images), "--validation_images"));
  TCM_ASSIGN_OR_RETURN(torch::Tensor images, ToModelInput(data.train.images, net->config().img_resolution()));
  if (labels.empty() && net->config().num_classes() == int64_t(all.class_names.size())) labels = all.class_names;
  // Training's random draws start here, whatever the EMAs' and the
  // classifier's construction below draws: EMA and mid_t candidates leave the
  // training itself unchanged.
  const torch::Tensor training_generator = CpuGeneratorState();
  TCM_ASSIGN_OR_RETURN(auto trainer, Trainer::Create(options, net, teacher, images, data.train.labels));
  TCM_ASSIGN_OR_RETURN(const std::optional<SamplingChoice> choice,
                       PrepareSamplingChoice(options, net->config(), data.validation));
  TCM_ASSIGN_OR_RETURN(const std::optional<TrainingEval> eval,
                       PrepareTrainingEval(stage, net->config(), data.validation, choice));
  if (!resume) TCM_RETURN_IF_ERROR(RecordNewRunSettings(out, stage));  // every input checked

  const std::string checkpoint = out + "/checkpoint.pt";
  SetCpuGeneratorState(training_generator);
  if (resume) {
    TCM_RETURN_IF_ERROR(trainer->LoadCheckpoint(checkpoint));
    if (adopted_settings) TCM_RETURN_IF_ERROR(WriteRunSettings(out + "/settings.json", *adopted_settings));
    std::printf("tcm-train: resumed %s at step %lld\n", checkpoint.c_str(), (long long)trainer->step());
  }
  // Lines of steps past the checkpoint's (a run stopped between logging and
  // checkpointing) and a line cut off by a crash are those the run writes again.
  for (const char* name : {"/log.jsonl", "/eval.jsonl"}) TCM_RETURN_IF_ERROR(TrimStepLog(out + name, trainer->step()));
  // --precision auto: float32 from the step whose gap is too small for bf16.
  // --precision bf16 keeps bf16 there and warns once.
  bool warned_bf16_gap = false;
  const auto fit_precision_to_gap = [&] {
    if (dtype != torch::kBFloat16 || stage == Stage::kDiffusion) return;
    const double ratio = trainer->NextGapRatio();
    if (ratio <= kBf16MaxGapRatio) return;
    if (!auto_precision) {
      if (warned_bf16_gap) return;
      warned_bf16_gap = true;
      std::printf(
          "tcm-train: warning: from step %lld the gap ratio %.4f is above %g and --precision bf16 keeps bf16, in which "
          "the truncated stage degraded at ratio 0.988 and collapsed to unrecognisable images at 0.996 and 0.999 "
          "(docs/TRAINING.md, \"Arithmetic\"); --precision auto runs these steps in float32\n",
          (long long)trainer->step() + 1, ratio, kBf16MaxGapRatio);
      std::fflush(stdout);
      return;
    }
    dtype = torch::kFloat32;
    net->SetCompute(dtype, channels_last);
    if (teacher) teacher->SetCompute(dtype, channels_last);
    std::printf("tcm-train: from step %lld float32 (--precision auto): the gap ratio %.4f is above %g\n",
                (long long)trainer->step() + 1, ratio, kBf16MaxGapRatio);
    std::fflush(stdout);
  };
  fit_precision_to_gap();
  int64_t parameters = 0;
  for (const auto& p : net->parameters()) parameters += p.numel();
  std::printf(
      "tcm-train %s: %lld images (%lld held out), %.2f M parameters, batch %lld, %lld steps, %s%s, run directory %s\n",
      StageName(stage), (long long)images.size(0), (long long)data.validation.images.size(0), double(parameters) / 1e6,
      (long long)options.batch_size, (long long)absl::GetFlag(FLAGS_steps), dtype == torch::kBFloat16 ? "bf16" : "fp32",
      channels_last ? " channels-last" : "", out.c_str());
  std::fflush(stdout);

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::ofstream log(out + "/log.jsonl", std::ios::app);
  std::ofstream eval_log;
  if (eval) eval_log.open(out + "/eval.jsonl", std::ios::app);
  const int64_t total = absl::GetFlag(FLAGS_steps), log_every = absl::GetFlag(FLAGS_log_every),
                checkpoint_every = absl::GetFlag(FLAGS_checkpoint_every);
  using Clock = std::chrono::steady_clock;
  const auto run_start = Clock::now();
  auto window_start = Clock::now();
  int64_t window_steps = 0;
  double loss_sum = 0, boundary_sum = 0;
  while (trainer->step() < total && !g_stop) {
    fit_precision_to_gap();
    const StepStats s = trainer->Step();
    if (!std::isfinite(s.loss)) return absl::InternalError(absl::StrCat("the loss is not finite at step ", s.step));
    ++window_steps;
    loss_sum += s.loss;
    boundary_sum += s.boundary;
    if (s.step % log_every == 0 || s.step == total) {
      const double seconds = std::chrono::duration<double>(Clock::now() - window_start).count();
      const double img_per_s = double(window_steps * options.batch_size) / seconds;
      const double left = double(total - s.step) * seconds / double(window_steps);
      std::string line = absl::StrFormat("step %d/%d  loss %.4f", s.step, total, loss_sum / window_steps);
      if (stage == Stage::kTruncated) absl::StrAppendFormat(&line, "  boundary %.4f", boundary_sum / window_steps);
      if (stage != Stage::kDiffusion) absl::StrAppendFormat(&line, "  ratio %.4f", s.ratio);
      absl::StrAppendFormat(&line, "  grad %.3g  lr %.3g  %.1f img/s  left %s", s.grad_norm, s.lr, img_per_s,
                            Duration(left));
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
      log << absl::StrFormat(
                 "{\"step\": %d, \"loss\": %.6g, \"boundary\": %.6g, \"ratio\": %.6g, \"grad_norm\": %.6g, "
                 "\"lr\": %.6g, \"images_per_second\": %.4g}\n",
                 s.step, loss_sum / window_steps, boundary_sum / window_steps, s.ratio, s.grad_norm, s.lr, img_per_s)
          << std::flush;
      window_start = Clock::now();
      window_steps = 0;
      loss_sum = boundary_sum = 0;
    }
    if (s.step % checkpoint_every == 0) TCM_RETURN_IF_ERROR(trainer->SaveCheckpoint(checkpoint));
    if (eval && s.step % eval->every == 0) {
      const absl::Status scored = EvaluateWhileTraining(*eval, *trainer, labels, dtype, eval_log);
      if (!scored.ok()) {  // keep the steps trained since the last checkpoint
        TCM_RETURN_IF_ERROR(trainer->SaveCheckpoint(checkpoint));
        return scored;
      }
    }
  }
  TCM_RETURN_IF_ERROR(trainer->SaveCheckpoint(checkpoint));
  if (g_stop) {
    std::printf("tcm-train: stopped at step %lld; checkpoint %s written, continue with --resume\n",
                (long long)trainer->step(), checkpoint.c_str());
    return absl::OkStatus();
  }
  // The training is done and saved: from here a signal ends the run at once.
  std::snprintf(g_interrupted_line, sizeof(g_interrupted_line),
                "tcm-train: interrupted while choosing the sampling settings and exporting the model; %s holds the "
                "finished run (step %lld): run the same command with --resume to choose and export again\n",
                checkpoint.c_str(), (long long)trainer->step());
  std::fflush(stdout);
  std::signal(SIGINT, OnSignalAfterTraining);
  std::signal(SIGTERM, OnSignalAfterTraining);
  if (g_stop) OnSignalAfterTraining(0);  // a signal between the checkpoint and the handlers
  // Tests hold the run here, its handlers installed, while the file named by
  // TCM_TEST_CHOICE_GATE exists (production never sets it).
  if (const char* gate = std::getenv("TCM_TEST_CHOICE_GATE")) {
    std::printf("tcm-train: held before choosing while %s exists\n", gate);
    std::fflush(stdout);
    while (std::filesystem::exists(gate)) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  TCM_RETURN_IF_ERROR(
      Export(*trainer, stage, out, labels, teacher ? &teacher_dir : nullptr, options.transition_t, choice, dtype));
  const double seconds = std::chrono::duration<double>(Clock::now() - run_start).count();
  std::printf("tcm-train: done in %s; model directory %s/model%s\n", Duration(seconds).c_str(), out.c_str(),
              teacher ? absl::StrCat(" (and ", out, "/model-composed with the teacher below t')").c_str() : "");
  return absl::OkStatus();
}

}  // namespace
}  // namespace tcm

int main(int argc, char** argv) {
  tcm::SetUsage(
      "Trains a TCM in stages.\n"
      "  tcm-train diffusion   --config CONFIG.pbtxt --out RUN   EDM denoising score matching (the initialisation)\n"
      "  tcm-train consistency --init MODEL_DIR --out RUN       stage 1: consistency training over [t_lower, t_upper]\n"
      "  tcm-train truncated   --init MODEL_DIR --teacher MODEL_DIR --t_lower 1 --out RUN\n"
      "                                                         stage 2: truncated training over [t', t_upper]");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    tcm::PrintToolError("tcm-train", "give one stage: diffusion, consistency or truncated (see --help)");
    return tcm::kToolFailureExitCode;
  }
  // 2: the command line or its inputs are wrong; 1: training itself failed.
  return tcm::RunToolMain("tcm-train", [&]() -> absl::StatusOr<int> {
    const absl::Status status = tcm::Run(args[1]);
    if (status.ok()) return 0;
    if (absl::IsInvalidArgument(status) || absl::IsNotFound(status)) return status;
    tcm::PrintToolError("tcm-train", status.message());
    return 1;
  });
}
