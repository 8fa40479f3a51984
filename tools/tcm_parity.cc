// tcm-parity: checks the native networks against reference outputs.
//
//   tcm-parity --weights W.safetensors --io IO.safetensors
//   tcm-parity --model_dir models/NAME --io IO.safetensors
//
// Builds the network described by the `config` metadata of W (the reference
// ECMPrecond keyword arguments) or by a model directory, runs `denoised`,
// `sample_1step` and `sample_2step` on the inputs of IO, prints the relative
// error max|out - ref| / max|ref| of each, and exits 1 if any is above
// --tolerance (2 on bad input).
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/flags_usage.h"
#include "common/status_macros.h"
#include "common/tool_main.h"
#include "model/cpu_threads.h"
#include "model/denoiser.h"
#include "model/model_config.h"
#include "model/model_repository.h"
#include "model/sampler.h"
#include "model/tensor_io.h"

ABSL_FLAG(std::string, weights, "", "Reference state dict (.safetensors) with `config` metadata.");
ABSL_FLAG(std::string, model_dir, "", "A model directory to test instead of --weights.");
ABSL_FLAG(std::string, io, "",
          "Reference inputs and outputs (.safetensors): x, sigma, [class_labels], denoised, "
          "latents, step2_noise, sample_1step, sample_2step.");
ABSL_FLAG(std::string, precision, "fp32", "The network body's precision: fp32 or bf16 (or fp16 with --device=cuda).");
ABSL_FLAG(std::string, device, "cpu", "Where the network runs: cpu, or cuda (a CUDA LibTorch and a visible GPU).");
ABSL_FLAG(bool, channels_last, false, "Run the network in channels-last layout (as tcm-server does).");
ABSL_FLAG(double, tolerance, 0,
          "Largest accepted relative error max|out-ref|/max|ref|; 0 = the precision's own: 1e-4 for fp32, 2e-2 "
          "for bf16 and fp16.");
ABSL_FLAG(int, threads, 0, "Intra-op threads, 0 to 1024; 0 = one per core.");

namespace tcm {
namespace {

absl::StatusOr<std::shared_ptr<Denoiser>> LoadFromWeights(const std::string& path) {
  TCM_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Read(path));
  auto it = file.metadata().find("config");
  if (it == file.metadata().end())
    return absl::InvalidArgumentError(absl::StrCat(path, ": no `config` metadata (reference ECMPrecond kwargs)"));
  auto config = ModelConfigFromReferenceKwargs(it->second);
  if (!config.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": config: ", config.status().message()));
  ModelDirectory model;
  model.path = path;
  model.config = *config;
  model.weights = ToTensors(file);
  return BuildReplica(model);
}

absl::StatusOr<torch::Tensor> Get(const TensorMap& io, const std::string& key, const std::string& source) {
  auto it = io.find(key);
  if (it == io.end()) return absl::InvalidArgumentError(absl::StrCat(source, ": missing tensor '", key, "'"));
  return it->second;
}

// The inputs must fit the network: [N, C, R, R] images, N noise levels, and
// class labels in range exactly when the network is conditional.
absl::Status CheckInputs(const v1::ModelConfig& config, const torch::Tensor& x, const torch::Tensor& sigma,
                         const torch::Tensor& labels, const std::string& source) {
  const int64_t res = config.img_resolution(), channels = config.img_channels();
  if (x.dim() != 4 || x.size(1) != channels || x.size(2) != res || x.size(3) != res)
    return absl::InvalidArgumentError(absl::StrCat(source, ": 'x' has shape [", absl::StrJoin(x.sizes(), ", "),
                                                   "] but the network takes [N, ", channels, ", ", res, ", ", res,
                                                   "]"));
  if (sigma.dim() != 1 || sigma.size(0) != x.size(0))
    return absl::InvalidArgumentError(absl::StrCat(source, ": 'sigma' must hold one noise level per row of 'x'"));
  if (config.num_classes() > 0 && !labels.defined())
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": no 'class_labels' for a network with ", config.num_classes(), " classes"));
  if (config.num_classes() == 0 && labels.defined())
    return absl::InvalidArgumentError(absl::StrCat(source, ": 'class_labels' given to an unconditional network"));
  if (labels.defined() && (labels.numel() != x.size(0) || labels.min().item<int64_t>() < 0 ||
                           labels.max().item<int64_t>() >= config.num_classes()))
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": 'class_labels' must hold one class in [0, ", config.num_classes(), ") per row"));
  return absl::OkStatus();
}

double RelativeError(const torch::Tensor& out, const torch::Tensor& ref) {
  const torch::Tensor r = ref.to(torch::kFloat64);
  return (out.to(torch::kCPU, torch::kFloat64) - r).abs().max().item<double>() / r.abs().max().item<double>();
}

absl::StatusOr<bool> Run() {
  if (!(absl::GetFlag(FLAGS_tolerance) >= 0))
    return absl::InvalidArgumentError(
        absl::StrCat("--tolerance: must be 0 (the precision's own) or more, got ", absl::GetFlag(FLAGS_tolerance)));
  const std::string io_path = absl::GetFlag(FLAGS_io);
  const std::string weights = absl::GetFlag(FLAGS_weights), model_dir = absl::GetFlag(FLAGS_model_dir);
  if (io_path.empty() || weights.empty() == model_dir.empty())
    return absl::InvalidArgumentError("give --io and exactly one of --weights or --model_dir (see --help)");
  TCM_RETURN_IF_ERROR(CheckThreadsFlag(absl::GetFlag(FLAGS_threads)));
  ConfigureCpuThreads(absl::GetFlag(FLAGS_threads));

  std::shared_ptr<Denoiser> denoiser;
  if (!weights.empty()) {
    TCM_ASSIGN_OR_RETURN(denoiser, LoadFromWeights(weights));
  } else {
    TCM_ASSIGN_OR_RETURN(auto model, ReadModelDirectory(model_dir));
    TCM_ASSIGN_OR_RETURN(denoiser, BuildReplica(model));
  }
  const std::string device_name = absl::GetFlag(FLAGS_device), precision = absl::GetFlag(FLAGS_precision);
  if (device_name != "cpu" && device_name != "cuda")
    return absl::InvalidArgumentError(absl::StrCat("--device: must be cpu or cuda, got ", device_name));
  const torch::Device device(device_name == "cuda" ? torch::kCUDA : torch::kCPU);
  if (precision != "fp32" && precision != "bf16" && !(precision == "fp16" && device.is_cuda()))
    return absl::InvalidArgumentError(absl::StrCat("--precision: must be fp32 or bf16, got ", precision));
  if (device.is_cuda()) {
    if (!torch::cuda::is_available())
      return absl::FailedPreconditionError("--device=cuda: no CUDA device is visible, or LibTorch has no CUDA");
    at::globalContext().setAllowTF32CuDNN(false);  // fp32 is checked as fp32, as tcm-server runs it
    at::globalContext().setAllowTF32CuBLAS(false);
    denoiser->to(device);
  }
  denoiser->SetCompute(precision == "bf16"   ? torch::kBFloat16
                       : precision == "fp16" ? torch::kHalf
                                             : torch::kFloat32,
                       absl::GetFlag(FLAGS_channels_last));
  denoiser->PrepareForInference();
  TCM_ASSIGN_OR_RETURN(auto io_file, SafetensorsFile::Read(io_path));
  const TensorMap io = ToTensors(io_file);
  double t_max = denoiser->config().t_max(), mid_t = denoiser->config().mid_t();
  for (const auto& [key, value] : {std::pair<const char*, double*>{"t_max", &t_max}, {"mid_t", &mid_t}}) {
    const auto m = io_file.metadata().find(key);
    if (m == io_file.metadata().end()) continue;
    if (!absl::SimpleAtod(m->second, value) || !(*value > 0) || !std::isfinite(*value))
      return absl::InvalidArgumentError(
          absl::StrCat(io_path, ": metadata ", key, ": must be a positive finite number, got '", m->second, "'"));
  }

  TCM_ASSIGN_OR_RETURN(auto x, Get(io, "x", io_path));
  TCM_ASSIGN_OR_RETURN(auto sigma, Get(io, "sigma", io_path));
  TCM_ASSIGN_OR_RETURN(auto latents, Get(io, "latents", io_path));
  TCM_ASSIGN_OR_RETURN(auto step2_noise, Get(io, "step2_noise", io_path));
  torch::Tensor labels;
  if (io.count("class_labels")) labels = io.at("class_labels");

  TCM_RETURN_IF_ERROR(CheckInputs(denoiser->config(), x, sigma, labels, io_path));
  TCM_RETURN_IF_ERROR(CheckInputs(denoiser->config(), latents, sigma, labels, io_path));

  torch::InferenceMode inference;
  const int64_t n = latents.size(0);
  auto on = [&](const torch::Tensor& t) { return t.defined() ? t.to(device) : t; };  // inputs to --device
  const torch::Tensor denoised = denoiser->forward(on(x), on(sigma), on(labels));
  const torch::Tensor latents32 = on(latents.to(torch::kFloat32));
  const torch::Tensor sample1 =
      denoiser->forward(FirstStepInput(latents32, t_max), on(torch::full({n}, t_max)), on(labels));
  const torch::Tensor sample2 = denoiser->forward(SecondStepInput(sample1, on(step2_noise.to(torch::kFloat32)), mid_t),
                                                  on(torch::full({n}, mid_t)), on(labels));

  bool pass = true;
  const double tolerance = absl::GetFlag(FLAGS_tolerance) > 0 ? absl::GetFlag(FLAGS_tolerance)
                           : precision != "fp32"              ? 2e-2
                                                              : 1e-4;
  std::printf("%s%s%s, tolerance %.0e\n", precision.c_str(), absl::GetFlag(FLAGS_channels_last) ? " channels-last" : "",
              device.is_cuda() ? " on cuda" : "", tolerance);
  for (const auto& [name, out] : {std::pair<std::string, torch::Tensor>{"denoised", denoised},
                                  {"sample_1step", sample1},
                                  {"sample_2step", sample2}}) {
    TCM_ASSIGN_OR_RETURN(auto ref, Get(io, name, io_path));
    if (ref.sizes() != out.sizes())
      return absl::InvalidArgumentError(absl::StrCat(io_path, ": '", name, "' has another shape than the output"));
    const double err = RelativeError(out, ref);
    const bool ok = err <= tolerance;
    pass = pass && ok;
    std::printf("%-13s relative error %.3e  %s\n", name.c_str(), err, ok ? "ok" : "FAIL");
  }
  return pass;
}

}  // namespace
}  // namespace tcm

int main(int argc, char** argv) {
  tcm::SetUsage(
      "Checks the native network against reference outputs.\n"
      "  tcm-parity --weights W.safetensors --io IO.safetensors\n"
      "  tcm-parity --model_dir models/NAME --io IO.safetensors");
  const std::vector<char*> leftovers = absl::ParseCommandLine(argc, argv);
  // Exit 0: within tolerance; 1: outside it; 2: the inputs could not be checked.
  return tcm::RunToolMain("tcm-parity", [&]() -> absl::StatusOr<int> {
    TCM_RETURN_IF_ERROR(tcm::NoPositionalArguments(leftovers));
    TCM_ASSIGN_OR_RETURN(const bool within_tolerance, tcm::Run());
    return within_tolerance ? 0 : 1;
  });
}
