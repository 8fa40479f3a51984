// tcm-model-bench: in-process forward-pass throughput of one network.
//
//   tcm-model-bench --config tools/configs/edm2-fashion-mnist.pbtxt
//   tcm-model-bench --model_dir models/NAME --batch_sizes 1,16,64
//
// For each batch size, times repeated forward passes (median per pass) of the preconditioned
// network D(x, sigma, class) and reports images/s and the achieved GFLOP/s
// (FLOPs counted from the architecture) beside the fp32 matmul GFLOP/s of a
// 2048x2048 product measured in the same run: the machine's practical ceiling.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/flags_usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "model/cpu_threads.h"
#include "model/malloc_config.h"
#include "model/derived_tensor.h"
#include "model/model_config.h"
#include "model/model_repository.h"
#include "model/sampler.h"

ABSL_FLAG(std::string, model_dir, "", "Model directory to benchmark (its weights are used).");
ABSL_FLAG(std::string, config, "", "Or a config.pbtxt: the network is built with random weights.");
ABSL_FLAG(std::string, batch_sizes, "1,16,64", "Comma-separated batch sizes.");
ABSL_FLAG(double, seconds, 3.0, "Minimum timed duration per batch size, seconds.");
ABSL_FLAG(int, threads, 0, "Intra-op threads; 0 = one per core.");
ABSL_FLAG(bool, baseline, false,
          "Measure the path before the load-time optimisations: weights normalised on every call, NoGradGuard "
          "instead of InferenceMode, and OpenBLAS threads nested inside LibTorch's.");
ABSL_FLAG(bool, conv_ceiling, true,
          "Also time one 3x3 convolution of the network's first-level width and resolution alone: the "
          "practical ceiling of the network's dominant layer.");

namespace tcm {
namespace {

using Clock = std::chrono::steady_clock;

// Runs `fn` once to warm up, then at least 3 times and until `seconds` have
// passed; returns the median seconds per call (robust to other load).
template <typename Fn>
double TimePerCall(Fn&& fn, double seconds) {
  fn();
  std::vector<double> times;
  const auto start = Clock::now();
  while (times.size() < 3 || std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
    const auto t0 = Clock::now();
    fn();
    times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

// The BLAS runs on every core for this measurement, as a plain matmul would.
double MatmulGflops(double seconds) {
  SetBlasThreads(AvailableCores());
  const int64_t n = 2048;
  torch::Tensor a = torch::randn({n, n}), b = torch::randn({n, n}), c = torch::empty({n, n});
  const double t = TimePerCall([&] { torch::mm_out(c, a, b); }, seconds);
  SetBlasThreads(1);
  return 2.0 * n * n * n / t / 1e9;
}

// GFLOP/s of a lone channels x channels 3x3 convolution on [batch, channels, res, res].
double ConvGflops(int64_t batch, int64_t channels, int64_t res, double seconds) {
  torch::InferenceMode inference;
  torch::Tensor x = torch::randn({batch, channels, res, res}), w = torch::randn({channels, channels, 3, 3});
  const double t = TimePerCall([&] { torch::conv2d(x, w, {}, 1, 1); }, seconds);
  return 2.0 * batch * channels * channels * 9 * res * res / t / 1e9;
}

int64_t FirstLevelChannels(const v1::ModelConfig& c) {
  return c.has_edm2() ? int64_t(c.edm2().model_channels()) * c.edm2().channel_mult(0)
                      : int64_t(c.song().model_channels()) * c.song().channel_mult(0);
}

absl::StatusOr<std::shared_ptr<Denoiser>> LoadNetwork() {
  const std::string dir = absl::GetFlag(FLAGS_model_dir), config_path = absl::GetFlag(FLAGS_config);
  if (dir.empty() == config_path.empty())
    return absl::InvalidArgumentError("give exactly one of --model_dir or --config (see --help)");
  ModelDirectory model;
  if (!dir.empty()) {
    TCM_ASSIGN_OR_RETURN(model, ReadModelDirectory(dir));
  } else {
    TCM_ASSIGN_OR_RETURN(model.config, ReadModelConfigFile(config_path));
    TCM_ASSIGN_OR_RETURN(auto random, Denoiser::Create(model.config));
    model.weights = random->StateDict();
    model.path = config_path;
  }
  return BuildReplica(model);
}

absl::Status Run() {
  ConfigureCpuThreads(absl::GetFlag(FLAGS_threads));
  KeepFreedMemoryForReuse();  // as tcm-server does
  std::vector<int64_t> batch_sizes;
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_batch_sizes), ',')) {
    int64_t b;
    if (!absl::SimpleAtoi(part, &b) || b <= 0)
      return absl::InvalidArgumentError("--batch_sizes: expected positive integers separated by commas");
    batch_sizes.push_back(b);
  }
  const bool baseline = absl::GetFlag(FLAGS_baseline);
  DerivedTensor::SetCachingEnabled(!baseline);
  if (baseline) SetBlasThreads(AvailableCores());
  TCM_ASSIGN_OR_RETURN(auto denoiser, LoadNetwork());
  const auto& config = denoiser->config();
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const double flops = denoiser->FlopsPerImage();

  std::printf("network: %s %ux%ux%u, %u classes, %.3f GFLOP per image, %d threads, %s path\n",
              config.architecture().c_str(), config.img_resolution(), config.img_resolution(), config.img_channels(),
              config.num_classes(), flops / 1e9, torch::get_num_threads(), baseline ? "baseline" : "optimised");
  const double ceiling = MatmulGflops(seconds);
  std::printf("fp32 matmul 2048x2048: %.1f GFLOP/s\n", ceiling);
  const bool conv = absl::GetFlag(FLAGS_conv_ceiling);
  const int64_t conv_channels = FirstLevelChannels(config);
  if (conv)
    std::printf("conv ceiling: one %lldx%lld 3x3 convolution at %ux%u, alone\n", static_cast<long long>(conv_channels),
                static_cast<long long>(conv_channels), config.img_resolution(), config.img_resolution());
  std::printf("%6s %12s %12s %10s %10s%s\n", "batch", "ms/batch", "images/s", "GFLOP/s", "of matmul",
              conv ? "   conv GFLOP/s   of matmul" : "");
  for (int64_t b : batch_sizes) {
    const int64_t res = config.img_resolution();
    torch::Tensor x = torch::randn({b, int64_t(config.img_channels()), res, res}) * 80;
    torch::Tensor sigma = torch::full({b}, 80.0);
    torch::Tensor labels = config.num_classes() ? torch::randint(config.num_classes(), {b}) : torch::Tensor();
    auto forward = [&] {
      if (baseline) {
        torch::NoGradGuard no_grad;
        denoiser->forward(x, sigma, labels);
      } else {
        torch::InferenceMode inference;
        denoiser->forward(x, sigma, labels);
      }
    };
    const double t = TimePerCall(forward, seconds);
    const double gflops = flops * b / t / 1e9;
    std::printf("%6lld %12.2f %12.1f %10.1f %10.2f", static_cast<long long>(b), t * 1e3, b / t, gflops,
                gflops / ceiling);
    if (conv) {
      const double conv_gflops = ConvGflops(b, conv_channels, config.img_resolution(), seconds);
      std::printf(" %15.1f %11.2f", conv_gflops, conv_gflops / ceiling);
    }
    std::printf("\n");
    std::fflush(stdout);
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace tcm

int main(int argc, char** argv) {
  tcm::SetUsage(
      "Forward-pass throughput of one network.\n"
      "  tcm-model-bench --config tools/configs/edm2-fashion-mnist.pbtxt [--batch_sizes 1,16,64]\n"
      "  tcm-model-bench --model_dir models/NAME");
  absl::ParseCommandLine(argc, argv);
  try {
    auto status = tcm::Run();
    if (!status.ok()) {
      std::fprintf(stderr, "tcm-model-bench: %s\n", std::string(status.message()).c_str());
      return 2;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tcm-model-bench: %s\n", e.what());
    return 2;
  }
  return 0;
}
