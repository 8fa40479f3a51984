#include "training/trainer.h"

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace tcm {
namespace {

double MeanOrZero(const torch::Tensor& t) { return t.numel() > 0 ? t.mean().item<double>() : 0.0; }

}  // namespace

absl::StatusOr<Stage> ParseStage(const std::string& name) {
  if (name == "diffusion") return Stage::kDiffusion;
  if (name == "consistency") return Stage::kConsistency;
  if (name == "truncated") return Stage::kTruncated;
  return absl::InvalidArgumentError(
      absl::StrCat("stage: must be diffusion, consistency or truncated; got \"", name, "\""));
}

const char* StageName(Stage stage) {
  switch (stage) {
    case Stage::kDiffusion:
      return "diffusion";
    case Stage::kConsistency:
      return "consistency";
    case Stage::kTruncated:
      return "truncated";
  }
  return "?";
}

absl::Status CheckEmaOptions(const TrainOptions& options) {
  if (options.ema_type != "power" && options.ema_type != "constant")
    return absl::InvalidArgumentError(
        absl::StrCat("--ema_type: must be power or constant, got \"", options.ema_type, "\""));
  if (!options.ema_gamma_candidates.empty() && options.ema_type != "power")
    return absl::InvalidArgumentError("--ema_gamma_candidates: needs --ema_type=power");
  for (double gamma : options.ema_gamma_candidates)
    if (!(gamma > 0))
      return absl::InvalidArgumentError(
          absl::StrCat("--ema_gamma_candidates: each gamma must be positive, got ", gamma));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const TrainOptions& options, std::shared_ptr<Denoiser> net,
                                                         std::shared_ptr<Denoiser> teacher, torch::Tensor images,
                                                         torch::Tensor labels) {
  if ((options.stage == Stage::kTruncated) != (teacher != nullptr))
    return absl::InvalidArgumentError("--teacher: required by the truncated stage and only by it");
  if (options.batch_size < 1) return absl::InvalidArgumentError("--batch_size: must be at least 1");
  if (images.size(0) < 1) return absl::InvalidArgumentError("--data: the data set is empty");
  const auto& c = net->config();
  if (images.size(1) != c.img_channels() || images.size(2) != c.img_resolution())
    return absl::InvalidArgumentError(absl::StrCat("--data: images are ", images.size(1), "x", images.size(2), "x",
                                                   images.size(3), ", the model takes ", c.img_channels(), "x",
                                                   c.img_resolution(), "x", c.img_resolution()));
  if (c.num_classes() > 0 && labels.max().item<int64_t>() >= c.num_classes())
    return absl::InvalidArgumentError(absl::StrCat("--data: labels reach ", labels.max().item<int64_t>(),
                                                   ", the model has ", c.num_classes(), " classes"));
  if (absl::Status s = CheckEmaOptions(options); !s.ok()) return s;
  // Every EMA starts as a copy of the network.
  TensorMap weights;
  for (const auto& [k, v] : net->StateDict()) weights.emplace(k, v.detach());
  std::vector<std::shared_ptr<Denoiser>> emas;
  for (size_t i = 0; i <= options.ema_gamma_candidates.size(); ++i) {
    auto ema = Denoiser::Create(c);
    if (!ema.ok()) return ema.status();
    TensorMap copy;
    for (const auto& [k, v] : weights) copy.emplace(k, v.clone());
    if (absl::Status s = (*ema)->LoadStateDict(copy, "ema"); !s.ok()) return s;
    emas.push_back(*std::move(ema));
  }
  return std::unique_ptr<Trainer>(
      new Trainer(options, std::move(net), std::move(emas), std::move(teacher), std::move(images), std::move(labels)));
}

Trainer::Trainer(const TrainOptions& options, std::shared_ptr<Denoiser> net,
                 std::vector<std::shared_ptr<Denoiser>> emas, std::shared_ptr<Denoiser> teacher, torch::Tensor images,
                 torch::Tensor labels)
    : options_(options),
      net_(std::move(net)),
      ema_(emas.front()),
      teacher_(std::move(teacher)),
      candidate_emas_(emas.begin() + 1, emas.end()),
      images_(std::move(images)),
      labels_(std::move(labels)) {
  net_->train();
  for (const TrackedEma& ema : Emas()) {
    ema.net->eval();
    for (auto& p : ema.net->parameters()) p.set_requires_grad(false);
  }
  if (teacher_) {
    teacher_->train();  // dropout on, as the reference's teacher; its weights never change
    for (auto& p : teacher_->parameters()) p.set_requires_grad(false);
  }
  optimizer_ = std::make_unique<torch::optim::Adam>(
      net_->parameters(),
      torch::optim::AdamOptions(options_.lr).betas({options_.beta1, options_.beta2}).eps(options_.adam_eps));
}

double Trainer::LearningRate() const {
  double lr = options_.lr;
  const double iter = double(step_);  // steps done before this one, as the reference counts
  if (options_.decay_iter > 0) lr /= std::sqrt(std::max(iter / double(options_.decay_iter), 1.0));
  if (options_.rampup_iter > 0) lr *= std::min(iter / double(options_.rampup_iter), 1.0);
  return lr;
}

double Trainer::EmaBeta(double gamma) const {
  if (options_.ema_type == "constant") return options_.ema_beta;
  return std::pow(1.0 - 1.0 / double(step_), gamma + 1.0);  // step_ >= 1 here: 0 at the first step
}

std::vector<Trainer::TrackedEma> Trainer::Emas() {
  std::vector<TrackedEma> emas = {{ema_.get(), "ema/", options_.ema_gamma}};
  for (size_t i = 0; i < candidate_emas_.size(); ++i)
    emas.push_back({candidate_emas_[i].get(), absl::StrCat("ema", i + 1, "/"), options_.ema_gamma_candidates[i]});
  return emas;
}

void Trainer::UpdateEmas() {
  torch::NoGradGuard no_grad;
  auto net_params = net_->parameters();
  for (const TrackedEma& ema : Emas()) {
    const double beta = EmaBeta(ema.gamma);
    auto ema_params = ema.net->parameters();
    for (size_t i = 0; i < ema_params.size(); ++i) ema_params[i].lerp_(net_params[i].detach(), 1.0 - beta);
  }
}

double Trainer::NextGapRatio() const {
  const int64_t schedule_stage = options_.start_stage + step_ / std::max<int64_t>(options_.double_every, 1);
  return ScheduleRatio(schedule_stage, options_.q, options_.ratio_limit);
}

StepStats Trainer::Step() {
  StepStats stats;
  const torch::Tensor index = torch::randint(images_.size(0), {options_.batch_size}, torch::kInt64);
  const torch::Tensor images = images_.index_select(0, index);
  const torch::Tensor labels = net_->config().num_classes() > 0 ? labels_.index_select(0, index) : torch::Tensor();

  optimizer_->zero_grad();
  torch::Tensor objective;
  if (options_.stage == Stage::kDiffusion) {
    const torch::Tensor loss = DiffusionLoss(*net_, images, labels, options_.diffusion);
    objective = loss.mean();
    stats.loss = stats.unweighted = objective.item<double>();
  } else {
    stats.ratio = NextGapRatio();
    TruncatedComposition tcm{teacher_.get(), options_.transition_t};
    const ConsistencyLossTerms terms = ConsistencyLoss(*net_, tcm, images, labels, stats.ratio, options_.consistency);
    objective = terms.loss.mean();
    if (terms.boundary.numel() > 0) objective = objective + options_.w_boundary * terms.boundary.mean();
    stats.loss = terms.loss.mean().item<double>();
    stats.boundary = MeanOrZero(terms.boundary);
    stats.unweighted = terms.unweighted.mean().item<double>();
  }
  objective.backward();
  stats.grad_norm = torch::nn::utils::clip_grad_norm_(net_->parameters(), options_.grad_clip);
  stats.lr = LearningRate();
  for (auto& group : optimizer_->param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(stats.lr);
  {
    // NaN/Inf gradients are zeroed before Adam's step: a guard the reference
    // lacks, so that one bad batch cannot put NaN into the weights.
    torch::NoGradGuard no_grad;
    for (auto& p : net_->parameters())
      if (p.grad().defined()) torch::nan_to_num_(p.mutable_grad(), 0.0, 0.0, 0.0);
  }
  optimizer_->step();
  ++step_;
  UpdateEmas();
  stats.step = step_;
  return stats;
}

absl::Status Trainer::SaveCheckpoint(const std::string& path) {
  try {
    torch::serialize::OutputArchive archive;
    archive.write("stage", torch::tensor(int64_t(options_.stage)));
    archive.write("step", torch::tensor(step_));
    archive.write("generator", CpuGeneratorState());
    for (const auto& [k, v] : net_->StateDict()) archive.write("net/" + k, v.detach());
    for (const TrackedEma& ema : Emas())
      for (const auto& [k, v] : ema.net->StateDict()) archive.write(ema.prefix + k, v.detach());
    torch::serialize::OutputArchive adam;
    optimizer_->save(adam);
    archive.write("adam", adam);
    const std::string tmp = path + ".tmp";
    archive.save_to(tmp);
    std::filesystem::rename(tmp, path);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(path, ": writing the checkpoint failed: ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status Trainer::LoadCheckpoint(const std::string& path) {
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    torch::Tensor stage, step, generator;
    archive.read("stage", stage);
    if (stage.item<int64_t>() != int64_t(options_.stage))
      return absl::InvalidArgumentError(absl::StrCat(path, ": a checkpoint of the ",
                                                     StageName(Stage(stage.item<int64_t>())), " stage, not the ",
                                                     StageName(options_.stage), " stage"));
    archive.read("step", step);
    archive.read("generator", generator);
    // Undefined tensors, so that read() hands over new ones instead of copying into them.
    const auto read_weights = [&](Denoiser& into, const std::string& prefix) {
      TensorMap weights;
      for (const auto& [k, v] : net_->StateDict()) {
        torch::Tensor t;
        archive.read(prefix + k, t);
        weights.emplace(k, t);
      }
      return into.LoadStateDict(weights, path);
    };
    if (absl::Status s = read_weights(*net_, "net/"); !s.ok()) return s;
    for (const TrackedEma& ema : Emas())
      if (absl::Status s = read_weights(*ema.net, ema.prefix); !s.ok()) return s;
    torch::serialize::InputArchive adam;
    archive.read("adam", adam);
    optimizer_->load(adam);
    step_ = step.item<int64_t>();
    SetCpuGeneratorState(generator);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot resume from this checkpoint: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace tcm
