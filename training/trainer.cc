#include "training/trainer.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"
#include "model/torch_error.h"
#include "training/zip_checksums.h"

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
  // gamma is an exponent: an infinite one is no average at all.
  if (!(options.ema_gamma > 0 && std::isfinite(options.ema_gamma)))
    return absl::InvalidArgumentError(
        absl::StrCat("--ema_gamma: must be positive and finite, got ", options.ema_gamma));
  for (double gamma : options.ema_gamma_candidates)
    if (!(gamma > 0 && std::isfinite(gamma)))
      return absl::InvalidArgumentError(
          absl::StrCat("--ema_gamma_candidates: each gamma must be positive and finite, got ", gamma));
  if (!(options.ema_beta >= 0 && options.ema_beta < 1))
    return absl::InvalidArgumentError(absl::StrCat("--ema_beta: must be in [0, 1), got ", options.ema_beta));
  return absl::OkStatus();
}

absl::Status CheckTrainOptions(const TrainOptions& o) {
  // Ranges by kind; every comparison is false for NaN, which is refused with them.
  const auto refuse = [](const char* flag, const char* range, auto value) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": must be ", range, ", got ", value));
  };
  const auto finite = [](double v) { return std::isfinite(v); };
  if (!(o.batch_size >= 1 && o.batch_size <= kMaxBatchSize))
    return refuse("batch_size", absl::StrCat("in [1, ", kMaxBatchSize, "]").c_str(), o.batch_size);
  if (!(o.lr > 0 && finite(o.lr))) return refuse("lr", "positive and finite", o.lr);
  if (!(o.beta1 >= 0 && o.beta1 < 1)) return refuse("beta1", "in [0, 1)", o.beta1);
  if (!(o.beta2 >= 0 && o.beta2 < 1)) return refuse("beta2", "in [0, 1)", o.beta2);
  if (!(o.adam_eps > 0 && finite(o.adam_eps))) return refuse("adam_eps", "positive and finite", o.adam_eps);
  if (o.decay_iter < 0) return refuse("decay_iter", "0 or more", o.decay_iter);
  if (o.rampup_iter < 0) return refuse("rampup_iter", "0 or more", o.rampup_iter);
  if (!(o.grad_clip > 0)) return refuse("grad_clip", "positive", o.grad_clip);
  if (absl::Status s = CheckEmaOptions(o); !s.ok()) return s;
  if (!finite(o.diffusion.p_mean)) return refuse("diffusion_mean", "finite", o.diffusion.p_mean);
  if (!(o.diffusion.p_std > 0 && finite(o.diffusion.p_std)))
    return refuse("diffusion_std", "positive and finite", o.diffusion.p_std);
  const ConsistencyLossOptions& c = o.consistency;
  if (!finite(c.time.mean)) return refuse("mean", "finite", c.time.mean);
  if (!(c.time.std > 0 && finite(c.time.std))) return refuse("std", "positive and finite", c.time.std);
  if (!(c.time.df > 0 && finite(c.time.df))) return refuse("df", "positive and finite", c.time.df);
  if (!(c.time.t_lower > 0 && finite(c.time.t_lower))) return refuse("t_lower", "positive and finite", c.time.t_lower);
  if (!(c.time.t_upper > c.time.t_lower && finite(c.time.t_upper)))
    return refuse("t_upper", absl::StrCat("finite and above --t_lower (", c.time.t_lower, ")").c_str(), c.time.t_upper);
  if (!(c.huber_c >= 0 && finite(c.huber_c))) return refuse("c", "0 or more and finite", c.huber_c);
  if (!(c.boundary_prob >= 0 && c.boundary_prob < 1)) return refuse("boundary_prob", "in [0, 1)", c.boundary_prob);
  // ratio = 1 - 1/q^(stage + 1) must grow towards 1 from a positive start.
  if (!(o.q > 1 && finite(o.q))) return refuse("q", "above 1 and finite", o.q);
  // Above kMaxRatioLimit the gap dt = t (1 - ratio) (1 + 8 sigmoid(-t)) is a
  // few float32 steps of t at most, and rounds to 0 on the way up.
  if (!(o.ratio_limit > 0 && o.ratio_limit <= kMaxRatioLimit))
    return refuse("ratio_limit", absl::StrCat("in (0, ", kMaxRatioLimit, "]").c_str(), o.ratio_limit);
  if (o.double_every < 1) return refuse("double_every", "at least 1", o.double_every);
  if (!(o.start_stage >= 0 && o.start_stage <= kMaxStartStage))
    return refuse("start_stage", absl::StrCat("in [0, ", kMaxStartStage, "]").c_str(), o.start_stage);
  // Stage 2 places floor(batch_size * boundary_prob) rows at t'.
  if (o.stage == Stage::kTruncated && c.boundary_prob > 0 && double(o.batch_size) * c.boundary_prob < 1)
    return absl::InvalidArgumentError(
        absl::StrCat("--boundary_prob: ", c.boundary_prob, " of --batch_size ", o.batch_size,
                     " places no image at t' (need boundary_prob x batch_size >= 1, or 0 for no boundary loss)"));
  if (!(o.w_boundary >= 0 && finite(o.w_boundary))) return refuse("w_boundary", "0 or more and finite", o.w_boundary);
  if (!(o.transition_t > 0 && finite(o.transition_t)))
    return refuse("transition_t", "positive and finite", o.transition_t);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const TrainOptions& options, std::shared_ptr<Denoiser> net,
                                                         std::shared_ptr<Denoiser> teacher, torch::Tensor images,
                                                         torch::Tensor labels) {
  if ((options.stage == Stage::kTruncated) != (teacher != nullptr))
    return absl::InvalidArgumentError("--teacher: required by the truncated stage and only by it");
  if (absl::Status s = CheckTrainOptions(options); !s.ok()) return s;
  if (images.size(0) < 1) return absl::InvalidArgumentError("--data: the data set is empty");
  const auto& c = net->config();
  if (images.size(1) != c.img_channels() || images.size(2) != c.img_resolution())
    return absl::InvalidArgumentError(absl::StrCat("--data: images are ", images.size(1), "x", images.size(2), "x",
                                                   images.size(3), ", the model takes ", c.img_channels(), "x",
                                                   c.img_resolution(), "x", c.img_resolution()));
  if (c.num_classes() > 0 && labels.max().item<int64_t>() >= c.num_classes())
    return absl::InvalidArgumentError(absl::StrCat("--data: labels reach ", labels.max().item<int64_t>(),
                                                   ", the model has ", c.num_classes(), " classes"));
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
  const std::string tmp = path + ".tmp";
  const auto failed = [&](const std::string& why) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    return absl::InternalError(absl::StrCat(path, ": writing the checkpoint failed: ", why));
  };
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
    // LibTorch's own file writer, on a failed write (a full disk), throws
    // from its destructor and the process aborts. Here every write is
    // accepted as LibTorch sees it; the first failure is kept and reported.
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(tmp.c_str(), "wb"), &std::fclose);
    if (file == nullptr) return failed(std::strerror(errno));
    int error = 0;
    archive.save_to([&](const void* data, size_t size) -> size_t {
      if (error == 0 && size > 0 && std::fwrite(data, 1, size, file.get()) != size) error = errno ? errno : EIO;
      return size;
    });
    if (error == 0 && std::fflush(file.get()) != 0) error = errno ? errno : EIO;
    if (error == 0 && ::fsync(fileno(file.get())) != 0 && errno != EINVAL) error = errno;
    if (std::fclose(file.release()) != 0 && error == 0) error = errno ? errno : EIO;
    if (error != 0) return failed(std::strerror(error));
    std::error_code renamed;
    std::filesystem::rename(tmp, path, renamed);
    if (renamed) return failed(renamed.message());
  } catch (const std::exception& e) {
    return failed(ExceptionMessage(e));
  }
  return absl::OkStatus();
}

absl::Status Trainer::LoadCheckpoint(const std::string& path) {
  const auto refuse = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot resume from this checkpoint: ", why));
  };
  // LibTorch's reader skips the archive's checksums: a damaged record would load as other numbers.
  if (absl::Status whole = VerifyZipChecksums(path); !whole.ok())
    return whole.code() == absl::StatusCode::kDataLoss ? refuse(std::string(whole.message())) : whole;
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    torch::Tensor stage, step, generator;
    archive.read("stage", stage);
    if (stage.numel() != 1 || stage.item<int64_t>() != int64_t(options_.stage)) {
      const int64_t s = stage.numel() == 1 ? stage.item<int64_t>() : -1;
      if (s < 0 || s > int64_t(Stage::kTruncated)) return refuse("its stage is not one of the three");
      return absl::InvalidArgumentError(absl::StrCat(path, ": a checkpoint of the ", StageName(Stage(s)),
                                                     " stage, not the ", StageName(options_.stage), " stage"));
    }
    archive.read("step", step);
    if (step.numel() != 1) return refuse("its step is not one number");
    if (step.item<int64_t>() < 0 || step.item<int64_t>() > kMaxSteps)
      return refuse(absl::StrCat("its step ", step.item<int64_t>(), " is outside [0, ", kMaxSteps, "]"));
    archive.read("generator", generator);
    // Undefined tensors, so that read() hands over new ones instead of copying into them.
    const auto read_weights = [&](Denoiser& into, const std::string& prefix) {
      TensorMap weights;
      for (const auto& [k, v] : net_->StateDict()) {
        torch::Tensor t;
        archive.read(prefix + k, t);
        if (t.is_floating_point() && !torch::isfinite(t).all().item<bool>())
          return refuse(absl::StrCat("tensor ", prefix, k, " holds NaN or infinity"));
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
    // Adam's moments, by the name of the parameter they belong to.
    for (const auto& named : net_->named_parameters()) {
      const auto found = optimizer_->state().find(c10::guts::to_string(named.value().unsafeGetTensorImpl()));
      if (found == optimizer_->state().end()) continue;
      const auto& state = static_cast<const torch::optim::AdamParamState&>(*found->second);
      for (const auto& [name, t] : {std::pair<const char*, torch::Tensor>{"exp_avg", state.exp_avg()},
                                    {"exp_avg_sq", state.exp_avg_sq()},
                                    {"max_exp_avg_sq", state.max_exp_avg_sq()}})
        if (t.defined() && t.is_floating_point() && !torch::isfinite(t).all().item<bool>())
          return refuse(absl::StrCat("Adam's ", name, " of net/", named.key(), " holds NaN or infinity"));
    }
    step_ = step.item<int64_t>();
    SetCpuGeneratorState(generator);
  } catch (const std::exception& e) {
    return refuse(ExceptionMessage(e));
  }
  return absl::OkStatus();
}

}  // namespace tcm
