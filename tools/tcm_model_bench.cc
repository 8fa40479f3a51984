// tcm-model-bench: in-process forward-pass throughput of one network.
//
//   tcm-model-bench --config tools/configs/edm2-fashion-mnist.pbtxt
//   tcm-model-bench --model_dir models/NAME --batch_sizes 1,16,64 --precision fp32,bf16 --json bench.json
//
// For each precision and batch size, times repeated forward passes (median per
// pass) of the preconditioned network D(x, sigma, class) and reports images/s
// and the achieved GFLOP/s (FLOPs counted from the architecture). Measured in
// the same run, the ceilings: the fp32 matmul GFLOP/s of a 2048x2048 product,
// and a lone 3x3 convolution of the network's first level (its width and
// resolution, batch 16) in each precision and layout.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/cpu_features.h"
#include "common/flags_usage.h"
#include "common/status_macros.h"
#include "common/tool_main.h"
#include "common/write_file.h"
#include "model/cpu_threads.h"
#include "model/derived_tensor.h"
#include "model/direct_conv.h"
#include "model/malloc_config.h"
#include "model/model_config.h"
#include "model/model_repository.h"
#include "model/op_profile.h"
#include "model/sampler.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, model_dir, "", "Model directory to benchmark (its weights are used).");
ABSL_FLAG(std::string, config, "", "Or a config.pbtxt: the network is built with random weights.");
ABSL_FLAG(std::string, batch_sizes, "1,16,64", "Comma-separated batch sizes.");
ABSL_FLAG(std::string, precision, "fp32,bf16",
          "Comma-separated precisions of the network body to measure, each in turn: fp32, bf16.");
ABSL_FLAG(bool, channels_last, true, "Run activations and convolution weights in channels-last layout.");
ABSL_FLAG(bool, row_shards, true,
          "Split a batch of two or more images into one shard per thread, each computed on its own thread with "
          "one intra-op thread, as tcm-server does (false: every operation split over the threads).");
ABSL_FLAG(bool, direct_conv, true,
          "Run channels-last convolutions through oneDNN's own API with primitives made once per shape and the "
          "residual sum inside the convolution, as tcm-server does (false: LibTorch's convolution and a separate "
          "sum).");
ABSL_FLAG(bool, compare_direct_conv, false,
          "Also time, at each precision and batch size, passes with --direct_conv on and off in alternation and "
          "print each one's median and the median of the pairs' ratios (alternation cancels a machine's drift).");
ABSL_FLAG(bool, paired_ceiling, false,
          "Also time, at each precision and batch size, network passes and the lone first-level 3x3 convolution "
          "(batch 16, same precision and layout) in alternation (each three warm-up calls and the median of nine), and "
          "print the median of the pairs' GFLOP/s ratios, network / convolution: the fraction of the conv ceiling "
          "with the machine's drift cancelled.");
ABSL_FLAG(double, seconds, 3.0,
          "Minimum timed duration per batch size, seconds, at most 86400; 0 = the fewest timed calls (3 per "
          "measurement, 5 pairs when alternating).");
ABSL_FLAG(int, threads, 0, "Intra-op threads, 0 to 1024; 0 = one per core.");
ABSL_FLAG(bool, baseline, false,
          "Measure the path before the load-time optimisations: weights normalised on every call, NoGradGuard "
          "instead of InferenceMode, and OpenBLAS threads nested inside LibTorch's.");
ABSL_FLAG(bool, conv_ceiling, true,
          "Also time one 3x3 convolution of the network's first-level width and resolution alone (batch 16), in "
          "fp32 and bf16, NCHW and channels-last: the practical ceiling of the network's dominant layer.");
ABSL_FLAG(bool, profile, false,
          "Also print, for each precision, the operations that take the most time in a pass at the batch size "
          "nearest 16 (with --row_shards, the threads' times added).");
ABSL_FLAG(std::string, json, "",
          "Also write the CPU, the ceilings and one row per precision and batch size here, replaced whole once the "
          "run is over (left as it was when the run fails).");

namespace tcm {
namespace {

using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

// Seconds one call of fn takes.
template <typename Fn>
double Timed(Fn&& fn) {
  const auto t0 = Clock::now();
  fn();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Runs `fn` once to warm up, then at least 3 times and until `seconds` have
// passed; returns the median seconds per call (robust to other load).
template <typename Fn>
double TimePerCall(Fn&& fn, double seconds) {
  fn();
  std::vector<double> times;
  const auto start = Clock::now();
  while (times.size() < 3 || std::chrono::duration<double>(Clock::now() - start).count() < seconds)
    times.push_back(Timed(fn));
  return Median(std::move(times));
}

struct AlternatingTimes {
  double median_a, median_b, median_ratio;  // seconds per call; median of (a / b) over the pairs
  size_t pairs;
};

// Calls a and b in turn (each once to warm up first), at least 5 pairs and
// until `seconds` have passed.
template <typename FnA, typename FnB>
AlternatingTimes TimeAlternating(FnA&& a, FnB&& b, double seconds) {
  a();
  b();
  std::vector<double> ta, tb, ratio;
  const auto start = Clock::now();
  while (ta.size() < 5 || std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
    ta.push_back(Timed(a));
    tb.push_back(Timed(b));
    ratio.push_back(ta.back() / tb.back());
  }
  return {Median(ta), Median(tb), Median(ratio), ta.size()};
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

// A lone channels x channels 3x3 convolution on [batch, channels, res, res].
struct LoneConv {
  LoneConv(int64_t batch, int64_t channels, int64_t res, torch::ScalarType dtype, bool channels_last)
      : flops(2.0 * batch * channels * channels * 9 * res * res) {
    const auto format = channels_last ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous;
    x = torch::randn({batch, channels, res, res}).to(dtype).contiguous(format);
    w = torch::randn({channels, channels, 3, 3}).to(dtype).contiguous(format);
  }
  void operator()() const {
    torch::InferenceMode inference;
    torch::conv2d(x, w, {}, 1, 1);
  }
  double flops;
  torch::Tensor x, w;
};

struct PairedCeiling {
  double median_fraction;  // of the pairs' network / convolution GFLOP/s
  double median_network_gflops, median_conv_gflops;
  size_t pairs;
};

// Calls of each side per pair: untimed ones that bring it back to its steady
// speed after the other side ran (a lone convolution needs a few), then timed ones.
constexpr int kWarmUpCalls = 3, kTimedCalls = 9;

// Times the network (`network_flops` per call) and the lone convolution in
// turn, each as kWarmUpCalls untimed calls and the median of kTimedCalls
// timed ones, at least 5 pairs and until `seconds` have passed.
template <typename Fn>
PairedCeiling TimeAgainstCeiling(Fn&& network, double network_flops, const LoneConv& conv, double seconds) {
  const auto warm_median = [](auto&& fn) {
    for (int i = 0; i < kWarmUpCalls; ++i) fn();
    std::vector<double> times;
    for (int i = 0; i < kTimedCalls; ++i) times.push_back(Timed(fn));
    return Median(std::move(times));
  };
  std::vector<double> fraction, net, lone;
  const auto start = Clock::now();
  while (fraction.size() < 5 || std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
    net.push_back(network_flops / warm_median(network) / 1e9);
    lone.push_back(conv.flops / warm_median(conv) / 1e9);
    fraction.push_back(net.back() / lone.back());
  }
  return {Median(fraction), Median(net), Median(lone), fraction.size()};
}

// GFLOP/s of a lone convolution (LoneConv's arguments).
double ConvGflops(int64_t batch, int64_t channels, int64_t res, torch::ScalarType dtype, bool channels_last,
                  double seconds) {
  const LoneConv conv(batch, channels, res, dtype, channels_last);
  return conv.flops / TimePerCall(conv, seconds) / 1e9;
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

struct Precision {
  std::string name;  // "fp32" or "bf16"
  torch::ScalarType dtype;
};

absl::StatusOr<std::vector<Precision>> ParsePrecisions(const std::string& text) {
  std::vector<Precision> out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    if (part == "fp32") {
      out.push_back({"fp32", torch::kFloat32});
    } else if (part == "bf16") {
      out.push_back({"bf16", torch::kBFloat16});
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--precision: expected fp32 and/or bf16, comma-separated, got '", part, "'"));
    }
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> ParseBatchSizes(const std::string& text) {
  std::vector<int64_t> out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int64_t b;
    if (!absl::SimpleAtoi(part, &b) || b <= 0)
      return absl::InvalidArgumentError("--batch_sizes: expected positive integers separated by commas");
    out.push_back(b);
  }
  return out;
}

absl::Status Run() {
  const int threads = absl::GetFlag(FLAGS_threads);
  TCM_RETURN_IF_ERROR(CheckThreadsFlag(threads));
  const double seconds = absl::GetFlag(FLAGS_seconds);
  if (!(seconds >= 0 && seconds <= kMaxFlagSeconds))
    return absl::InvalidArgumentError(absl::StrCat("--seconds: must be a number of seconds in [0, ", kMaxFlagSeconds,
                                                   "] (0 = the fewest timed calls), got ", seconds));
  TCM_ASSIGN_OR_RETURN(const std::vector<int64_t> batch_sizes, ParseBatchSizes(absl::GetFlag(FLAGS_batch_sizes)));
  TCM_ASSIGN_OR_RETURN(const std::vector<Precision> precisions, ParsePrecisions(absl::GetFlag(FLAGS_precision)));
  const std::string json_path = absl::GetFlag(FLAGS_json);
  if (!json_path.empty())
    if (std::string problem = WritableFileProblem(json_path); !problem.empty())
      return absl::InvalidArgumentError(absl::StrCat("--json: cannot write ", json_path, ": ", problem));
  ConfigureCpuThreads(threads);
  KeepFreedMemoryForReuse();  // as tcm-server does
  const bool channels_last = absl::GetFlag(FLAGS_channels_last);
  const bool baseline = absl::GetFlag(FLAGS_baseline);
  const bool row_shards = absl::GetFlag(FLAGS_row_shards) && !baseline;
  DirectConv2d::SetEnabled(absl::GetFlag(FLAGS_direct_conv) && !baseline);
  DerivedTensor::SetCachingEnabled(!baseline);
  if (baseline) SetBlasThreads(AvailableCores());
  TCM_ASSIGN_OR_RETURN(auto denoiser, LoadNetwork());
  const auto& config = denoiser->config();
  const double flops = denoiser->FlopsPerImage();
  const bool bf16_native = CpuHasNativeBf16();
  nlohmann::json report = {{"cpu", {{"bf16_native", bf16_native}}}};

  std::printf("network: %s %ux%ux%u, %u classes, %.3f GFLOP per image, %d threads%s, %s path, %s layout\n",
              config.architecture().c_str(), config.img_resolution(), config.img_resolution(), config.img_channels(),
              config.num_classes(), flops / 1e9, torch::get_num_threads(),
              row_shards ? " (a shard of the batch each)" : "", baseline ? "baseline" : "optimised",
              channels_last ? "channels-last" : "NCHW");
  std::printf("cpu: %s native bf16\n", bf16_native ? "has" : "has no");
  const double matmul = MatmulGflops(seconds);
  std::printf("fp32 matmul 2048x2048: %.1f GFLOP/s\n", matmul);
  report["ceilings"]["matmul_fp32_gflops"] = matmul;
  std::map<std::string, double> conv;  // "fp32_channels_last" -> GFLOP/s
  if (absl::GetFlag(FLAGS_conv_ceiling)) {
    const int64_t channels = FirstLevelChannels(config), res = config.img_resolution();
    std::printf("lone %lldx%lld 3x3 convolution at %lldx%lld, batch 16 (GFLOP/s):", static_cast<long long>(channels),
                static_cast<long long>(channels), static_cast<long long>(res), static_cast<long long>(res));
    for (const Precision& p : {Precision{"fp32", torch::kFloat32}, Precision{"bf16", torch::kBFloat16}}) {
      for (bool cl : {false, true}) {
        const std::string key = absl::StrCat(p.name, cl ? "_channels_last" : "_nchw");
        conv[key] = ConvGflops(16, channels, res, p.dtype, cl, seconds);
        std::printf(" %s %.1f", key.c_str(), conv[key]);
      }
    }
    std::printf("\n");
    for (const auto& [key, value] : conv) report["ceilings"]["conv_gflops"][key] = value;
  }
  std::printf("%9s %6s %12s %12s %10s %10s\n", "precision", "batch", "ms/batch", "images/s", "GFLOP/s", "of conv");
  std::fflush(stdout);
  report["rows"] = nlohmann::json::array();
  for (const Precision& p : precisions) {
    denoiser->SetCompute(p.dtype, channels_last);
    denoiser->PrepareForInference();
    denoiser->SetRowShards(row_shards);
    std::function<void()> profile_pass;
    int64_t profile_batch = 0;
    for (int64_t b : batch_sizes) {
      const int64_t res = config.img_resolution();
      torch::Tensor x = torch::randn({b, int64_t(config.img_channels()), res, res}) * 80;
      torch::Tensor sigma = torch::full({b}, 80.0);
      torch::Tensor labels = config.num_classes() ? torch::randint(config.num_classes(), {b}) : torch::Tensor();
      auto forward = [denoiser, x, sigma, labels, baseline] {
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
      const std::string conv_key = absl::StrCat(p.name, channels_last ? "_channels_last" : "_nchw");
      const double of_conv = conv.count(conv_key) ? gflops / conv[conv_key] : 0;
      std::printf("%9s %6lld %12.2f %12.1f %10.1f %10s\n", p.name.c_str(), static_cast<long long>(b), t * 1e3, b / t,
                  gflops,
                  conv.count(conv_key) ? absl::StrCat(static_cast<int>(of_conv * 100 + 0.5), "%").c_str() : "-");
      std::fflush(stdout);
      report["rows"].push_back({{"precision", p.name},
                                {"channels_last", channels_last},
                                {"batch", b},
                                {"ms_per_batch", t * 1e3},
                                {"images_per_second", b / t},
                                {"gflops", gflops}});
      if (absl::GetFlag(FLAGS_compare_direct_conv)) {
        const bool direct = DirectConv2d::Enabled();
        const auto with = [&](bool on) {
          return [&, on] {
            DirectConv2d::SetEnabled(on);
            forward();
          };
        };
        const AlternatingTimes ab = TimeAlternating(with(true), with(false), seconds);
        DirectConv2d::SetEnabled(direct);
        std::printf("%9s %6lld direct conv on %.2f ms, off %.2f ms; on / off %.3f (median of %zu alternating pairs)\n",
                    p.name.c_str(), static_cast<long long>(b), ab.median_a * 1e3, ab.median_b * 1e3, ab.median_ratio,
                    ab.pairs);
        std::fflush(stdout);
      }
      if (absl::GetFlag(FLAGS_paired_ceiling)) {
        const LoneConv conv(16, FirstLevelChannels(config), res, p.dtype, channels_last);
        const PairedCeiling paired = TimeAgainstCeiling(forward, flops * b, conv, seconds);
        std::printf(
            "%9s %6lld of conv, paired: %.3f (network %.1f, lone convolution %.1f GFLOP/s; median of %zu "
            "pairs)\n",
            p.name.c_str(), static_cast<long long>(b), paired.median_fraction, paired.median_network_gflops,
            paired.median_conv_gflops, paired.pairs);
        std::fflush(stdout);
      }
      if (profile_batch == 0 || std::abs(b - 16) < std::abs(profile_batch - 16)) {
        profile_batch = b;
        profile_pass = forward;
      }
    }
    if (absl::GetFlag(FLAGS_profile)) {
      std::printf("\nprofile: %s, batch %lld, per pass\n%s\n", p.name.c_str(), static_cast<long long>(profile_batch),
                  OpTable(ProfileOps(profile_pass, 5), 15).c_str());
    }
  }
  if (!json_path.empty()) {
    if (absl::Status written = WriteFileAtomically(json_path, report.dump(2) + "\n"); !written.ok())
      return absl::Status(written.code(), absl::StrCat("--json: ", written.message()));
    std::printf("wrote %s\n", json_path.c_str());
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace tcm

int main(int argc, char** argv) {
  tcm::SetUsage(
      "Forward-pass throughput of one network.\n"
      "  tcm-model-bench --config tools/configs/edm2-fashion-mnist.pbtxt [--batch_sizes 1,16,64]\n"
      "  tcm-model-bench --model_dir models/NAME --precision fp32,bf16 --json bench.json [--profile]");
  const std::vector<char*> leftovers = absl::ParseCommandLine(argc, argv);
  return tcm::RunToolMain("tcm-model-bench", [&] {
    TCM_RETURN_IF_ERROR(tcm::NoPositionalArguments(leftovers));
    return tcm::Run();
  });
}
