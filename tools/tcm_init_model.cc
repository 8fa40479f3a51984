// tcm-init-model: writes a model directory with the reference random
// initialisation for a config.pbtxt. The starting point of training, and a
// stand-in model of the right shape for benchmarks and tests.
//
//   tcm-init-model --config tools/configs/edm2-fashion-mnist.pbtxt --output /tmp/models/fashion-random
#include <torch/torch.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/flags_usage.h"
#include "common/status_macros.h"
#include "common/tool_main.h"
#include "model/model_config.h"
#include "model/model_repository.h"

ABSL_FLAG(std::string, config, "", "The model's config.pbtxt (tcm.v1.ModelConfig, text format).");
ABSL_FLAG(std::string, output, "", "Model directory to write (created if missing).");
ABSL_FLAG(uint64_t, seed, 0, "Seed of the random initialisation.");

namespace tcm {
namespace {

absl::Status Run() {
  const std::string config_path = absl::GetFlag(FLAGS_config), output = absl::GetFlag(FLAGS_output);
  if (config_path.empty() || output.empty())
    return absl::InvalidArgumentError("give --config and --output (see --help)");
  TCM_ASSIGN_OR_RETURN(v1::ModelConfig config, ReadModelConfigFile(config_path));
  torch::manual_seed(absl::GetFlag(FLAGS_seed));
  TCM_ASSIGN_OR_RETURN(auto denoiser, Denoiser::Create(config));
  TCM_RETURN_IF_ERROR(WriteModelDirectory(output, config, denoiser->StateDict(), {}));
  std::printf("tcm-init-model: wrote %s (%s, %.3f GFLOP per image)\n", output.c_str(), config.architecture().c_str(),
              denoiser->FlopsPerImage() / 1e9);
  return absl::OkStatus();
}

}  // namespace
}  // namespace tcm

int main(int argc, char** argv) {
  tcm::SetUsage("Writes a randomly initialised model directory for a config.pbtxt.");
  const std::vector<char*> leftovers = absl::ParseCommandLine(argc, argv);
  return tcm::RunToolMain("tcm-init-model", [&] {
    TCM_RETURN_IF_ERROR(tcm::NoPositionalArguments(leftovers));
    return tcm::Run();
  });
}
