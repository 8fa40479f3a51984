#include "client/load_raw.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <deque>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/load_core.h"
#include "common/batching_defaults.h"
#include "common/cpu_features.h"
#include "common/png_encoder.h"
#include "common/status_macros.h"
#include "model/cpu_threads.h"
#include "model/malloc_config.h"
#include "model/model_repository.h"
#include "model/sampler.h"

namespace tcm {
namespace load {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Images sampled the way the server's step-level batcher and worker do it
// (server/worker_pool.cc): a pass takes the waiting second steps first, then
// new images, one row each with its own sigma. As in the server, a composed
// model whose steps run on different networks takes new images only into a
// pass without second steps.
class Pipeline {
 public:
  Pipeline(Denoiser& denoiser, RequestMix mix, int64_t class_label, bool png, int batch_size)
      : denoiser_(denoiser), mix_(mix), class_label_(class_label), png_(png), batch_size_(batch_size) {}

  // One forward pass; returns the images it finished. With `take_new` false
  // only waiting second steps run (none: returns 0 without a pass).
  absl::StatusOr<int64_t> Pass(bool take_new) {
    const auto& config = denoiser_.config();
    std::vector<Item> rows;
    while (static_cast<int>(rows.size()) < batch_size_ && !waiting_.empty()) {
      rows.push_back(std::move(waiting_.front()));
      waiting_.pop_front();
    }
    const bool mix = StepsShareNetwork(config) || rows.empty();
    while (take_new && mix && static_cast<int>(rows.size()) < batch_size_) rows.push_back(NewItem());
    if (rows.empty()) return 0;

    std::vector<torch::Tensor> inputs;
    std::vector<float> sigmas;
    std::vector<int64_t> labels;
    for (const Item& r : rows) {
      inputs.push_back(StepInput(config, r.seed, /*index=*/0, r.step, r.previous));
      sigmas.push_back(static_cast<float>(StepSigma(config, r.step)));
      labels.push_back(r.label);
    }
    torch::Tensor label_tensor = config.num_classes() ? torch::tensor(labels, torch::kInt64) : torch::Tensor();
    torch::Tensor out;
    {
      torch::InferenceMode inference;
      out = denoiser_.forward(torch::stack(inputs), torch::tensor(sigmas), label_tensor);
    }
    const torch::Tensor pixels = ToPixels(out);  // [N, H, W, C] uint8
    int64_t finished = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      Item& r = rows[i];
      if (r.step + 1 < r.steps) {
        r.previous = out[static_cast<int64_t>(i)].clone();
        ++r.step;
        waiting_.push_back(std::move(r));
        continue;
      }
      ++finished;
      if (png_) {
        const torch::Tensor p = pixels[static_cast<int64_t>(i)];
        auto encoded = EncodePng(p.data_ptr<uint8_t>(), static_cast<int>(p.size(1)), static_cast<int>(p.size(0)),
                                 static_cast<int>(p.size(2)));
        if (!encoded.ok()) return encoded.status();
      }
    }
    return finished;
  }

  bool idle() const { return waiting_.empty(); }

 private:
  struct Item {
    uint64_t seed = 0;
    int64_t label = -1;
    int steps = 1;
    int step = 0;
    torch::Tensor previous;
  };

  Item NewItem() {
    const RequestPlan plan = mix_.Plan(next_request_++);
    Item item;
    item.seed = plan.seed;
    item.steps = plan.steps;
    const int64_t classes = denoiser_.config().num_classes();
    if (classes > 0)
      item.label = class_label_ >= 0 ? class_label_ : static_cast<int64_t>(SplitMix64(plan.seed) % classes);
    return item;
  }

  Denoiser& denoiser_;
  const RequestMix mix_;
  const int64_t class_label_;
  const bool png_;
  const int batch_size_;
  uint64_t next_request_ = 0;
  std::deque<Item> waiting_;
};

absl::Status Drain(Pipeline& p) {
  while (!p.idle()) TCM_RETURN_IF_ERROR(p.Pass(false).status());
  return absl::OkStatus();
}

absl::StatusOr<RawCase> MeasureCase(Denoiser& denoiser, const RawOptions& options, int batch_size,
                                    const std::string& name, double fraction) {
  RawCase c;
  c.name = name;
  c.two_step_fraction = fraction;
  c.batch_size = batch_size;
  const RequestMix mix(options.seed, fraction);

  // Throughput at batch_size, after one untimed batch.
  {
    Pipeline warm(denoiser, mix, options.class_label, options.png, batch_size);
    TCM_RETURN_IF_ERROR(warm.Pass(true).status());
    TCM_RETURN_IF_ERROR(Drain(warm));
  }
  Pipeline p(denoiser, mix, options.class_label, options.png, batch_size);
  const auto start = Clock::now();
  while (true) {
    const bool take_new = c.passes < 3 || Since(start) < options.seconds;
    if (!take_new && p.idle()) break;
    TCM_ASSIGN_OR_RETURN(const int64_t finished, p.Pass(take_new));
    c.images += finished;
    ++c.passes;
  }
  c.seconds = Since(start);
  c.images_per_s = static_cast<double>(c.images) / c.seconds;
  c.ms_per_pass = c.seconds * 1e3 / static_cast<double>(c.passes);

  // Latency of one image alone.
  Pipeline single(denoiser, mix, options.class_label, options.png, 1);
  TCM_RETURN_IF_ERROR(single.Pass(true).status());
  TCM_RETURN_IF_ERROR(Drain(single));
  std::vector<double> latency_ms;
  const auto single_start = Clock::now();
  while (latency_ms.size() < 5 || Since(single_start) < options.seconds) {
    const auto t0 = Clock::now();
    TCM_RETURN_IF_ERROR(single.Pass(true).status());
    TCM_RETURN_IF_ERROR(Drain(single));
    latency_ms.push_back(Since(t0) * 1e3);
  }
  c.single_count = static_cast<int64_t>(latency_ms.size());
  c.single_p50_ms = Percentile(latency_ms, 50);
  return c;
}

}  // namespace

absl::StatusOr<RawReport> RunRaw(const RawOptions& options) {
  ConfigureCpuThreads(options.threads);
  KeepFreedMemoryForReuse();  // as tcm-server does
  TCM_ASSIGN_OR_RETURN(ModelDirectory model, ReadModelDirectory(options.model_dir));
  const auto& config = model.config;
  if (options.class_label >= 0 && options.class_label >= static_cast<int64_t>(config.num_classes()))
    return absl::InvalidArgumentError(
        config.num_classes() == 0 ? absl::StrCat("--class_label: model '", model.name, "' is unconditional; use -1")
                                  : absl::StrCat("--class_label: ", options.class_label, " is outside [0, ",
                                                 config.num_classes(), ") for model '", model.name, "'"));
  TCM_ASSIGN_OR_RETURN(std::shared_ptr<Denoiser> denoiser, BuildReplica(model));
  // The path tcm-server runs by default (--precision auto): bf16 where the CPU
  // has native bf16, else fp32; channels-last either way.
  const bool bf16 = CpuHasNativeBf16();
  denoiser->SetCompute(bf16 ? torch::kBFloat16 : torch::kFloat32, /*channels_last=*/true);
  denoiser->PrepareForInference();
  denoiser->SetRowShards(true);  // as tcm-server runs it

  RawReport report;
  report.model = absl::StrFormat("%s (%s %ux%ux%u, %u classes, %s channels-last)", model.name, config.architecture(),
                                 config.img_resolution(), config.img_resolution(), config.img_channels(),
                                 config.num_classes(), bf16 ? "bf16" : "fp32");
  report.threads = torch::get_num_threads();
  int batch_size = options.batch_size;
  if (batch_size <= 0)
    batch_size = config.batching().has_max_batch_size() ? config.batching().max_batch_size() : kDefaultMaxBatchSize;

  std::vector<std::pair<std::string, double>> cases = {{"1-step", 0.0}, {"2-step", 1.0}};
  const double f = options.two_step_fraction;
  if (f > 0 && f < 1) cases.emplace_back(absl::StrFormat("mix %.2f", f), f);
  try {
    for (const auto& [name, fraction] : cases) {
      TCM_ASSIGN_OR_RETURN(RawCase c, MeasureCase(*denoiser, options, batch_size, name, fraction));
      report.cases.push_back(std::move(c));
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("--raw: ", e.what()));
  }
  return report;
}

std::string RawTable(const RawReport& report) {
  std::string out = absl::StrFormat("%-10s %6s %7s %7s %9s %9s %15s\n", "case", "batch", "passes", "images", "img/s",
                                    "ms/pass", "batch-1 p50 ms");
  for (const RawCase& c : report.cases)
    absl::StrAppendFormat(&out, "%-10s %6d %7d %7d %9.2f %9.1f %15.1f\n", c.name, c.batch_size, c.passes, c.images,
                          c.images_per_s, c.ms_per_pass, c.single_p50_ms);
  return out;
}

nlohmann::json ToJson(const RawReport& report) {
  nlohmann::json j;
  j["model"] = report.model;
  j["threads"] = report.threads;
  j["cases"] = nlohmann::json::array();
  for (const RawCase& c : report.cases)
    j["cases"].push_back({{"case", c.name},
                          {"two_step_fraction", c.two_step_fraction},
                          {"batch_size", c.batch_size},
                          {"passes", c.passes},
                          {"images", c.images},
                          {"seconds", c.seconds},
                          {"images_per_s", c.images_per_s},
                          {"ms_per_pass", c.ms_per_pass},
                          {"single_image_count", c.single_count},
                          {"single_image_p50_ms", c.single_p50_ms}});
  return j;
}

}  // namespace load
}  // namespace tcm
