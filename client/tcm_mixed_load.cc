// tcm-mixed-load: sends mixed, misbehaving traffic to a tcm-server (Generate
// and GenerateStream, 1 and 2 steps, calls cancelled at random moments or
// given deadlines shorter than their work, malformed requests) and checks
// that every call ends with a code its kind allows. The soak and the
// hardening tests run it.
//
//   tcm-mixed-load --server 127.0.0.1:50051 --seconds 120 --callers 4 --seed 7
//
// Prints a progress line every --progress_every seconds, then one line per
// outcome; exits 0 when every call ended as it should, 1 when one did not,
// 2 on a usage error.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "client/client_common.h"
#include "client/load_core.h"
#include "client/mixed_traffic.h"
#include "common/flags_usage.h"
#include "common/tool_main.h"
#include "tcm/v1/tcm_service.grpc.pb.h"

ABSL_FLAG(std::string, model, "", "Model to load; empty = the server's default model.");
ABSL_FLAG(double, seconds, 60,
          "How long to send traffic, seconds, at most 604800 (a week); each caller then finishes its call.");
ABSL_FLAG(int64_t, calls_per_caller, 0, "Stop each caller after this many calls; 0 = run for --seconds.");
ABSL_FLAG(int, callers, 4, "Callers sending at once, each one call at a time.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the traffic plan: the same seed sends the same calls.");
ABSL_FLAG(int, max_images, 4,
          "Images per call, drawn from 1..max_images, at most 1048576. Keep it within the server's "
          "--max_images_per_request (default 64): a call asking for more is refused and counts as unexpected.");
ABSL_FLAG(double, stream_fraction, 0.5, "Share of calls made with GenerateStream.");
ABSL_FLAG(double, two_step_fraction, 0.5, "Share of 2-step calls.");
ABSL_FLAG(double, misbehaving_fraction, 0.5, "Share of calls that cancel, run out of time or are malformed.");
ABSL_FLAG(int, max_delay_ms, 40, "Longest cancel delay and shortest-deadline, milliseconds (drawn from 1..max).");
ABSL_FLAG(double, progress_every, 10, "Seconds between progress lines, at most 86400; 0 = none.");
ABSL_FLAG(double, connect_timeout, 30, "How long to wait for the server at start, seconds, at most 86400.");

namespace tcm {
namespace {

// The longest --seconds: a week.
constexpr double kMaxRunSeconds = 7 * kMaxFlagSeconds;
// The largest --max_images: the most tcm-server's --max_images_per_request takes.
constexpr int kMaxImagesPerCall = 1 << 20;

int UsageError(const std::string& message) {
  std::fprintf(stderr, "tcm-mixed-load: %s (see --help)\n", message.c_str());
  return 2;
}

// The traffic options for the model the server serves under `name` (empty =
// its default), from ListModels.
absl::StatusOr<traffic::TrafficOptions> OptionsFor(v1::TcmService::Stub& stub, const std::string& name) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::ListModelsResponse models;
  const grpc::Status status = stub.ListModels(&context, v1::ListModelsRequest(), &models);
  if (!status.ok()) return absl::UnavailableError(absl::StrCat("ListModels: ", status.error_message()));
  for (const auto& m : models.models()) {
    if (name.empty() ? !m.is_default() : m.name() != name) continue;
    traffic::TrafficOptions options;
    options.model = m.name();
    options.num_classes = static_cast<int>(m.num_classes());
    return options;
  }
  return absl::NotFoundError(absl::StrCat("--model: '", name, "' is not served"));
}

int Run() {
  const int callers = absl::GetFlag(FLAGS_callers);
  const int max_images = absl::GetFlag(FLAGS_max_images);
  const int max_delay_ms = absl::GetFlag(FLAGS_max_delay_ms);
  if (callers < 1 || callers > load::kMaxClientThreads)
    return UsageError(absl::StrCat("--callers: must be in [1, ", load::kMaxClientThreads, "], got ", callers));
  if (absl::GetFlag(FLAGS_calls_per_caller) < 0)
    return UsageError(absl::StrCat("--calls_per_caller: must be 0 (run for --seconds) or more, got ",
                                   absl::GetFlag(FLAGS_calls_per_caller)));
  if (max_images < 1 || max_images > kMaxImagesPerCall)
    return UsageError(absl::StrCat("--max_images: must be in [1, ", kMaxImagesPerCall,
                                   "] (the largest --max_images_per_request tcm-server takes), got ", max_images));
  if (max_delay_ms < 1) return UsageError("--max_delay_ms: must be at least 1");
  for (const auto& [name, value] : {std::pair{"--stream_fraction", absl::GetFlag(FLAGS_stream_fraction)},
                                    std::pair{"--two_step_fraction", absl::GetFlag(FLAGS_two_step_fraction)},
                                    std::pair{"--misbehaving_fraction", absl::GetFlag(FLAGS_misbehaving_fraction)}})
    if (!(value >= 0 && value <= 1)) return UsageError(absl::StrCat(name, ": must be in [0, 1], got ", value));
  const double seconds = absl::GetFlag(FLAGS_seconds), every = absl::GetFlag(FLAGS_progress_every);
  const double connect_timeout = absl::GetFlag(FLAGS_connect_timeout);
  if (!(seconds > 0 && seconds <= kMaxRunSeconds))
    return UsageError(
        absl::StrCat("--seconds: must be a number of seconds in (0, ", kMaxRunSeconds, "], got ", seconds));
  if (!(every >= 0 && every <= kMaxFlagSeconds))
    return UsageError(absl::StrCat("--progress_every: must be a number of seconds in [0, ", kMaxFlagSeconds,
                                   "] (0 = no progress lines), got ", every));
  if (!(connect_timeout > 0 && connect_timeout <= kMaxFlagSeconds))
    return UsageError(absl::StrCat("--connect_timeout: must be a number of seconds in (0, ", kMaxFlagSeconds, "], got ",
                                   connect_timeout));

  auto channel = MakeChannel(ChannelOptionsFromFlags());
  if (!channel.ok()) return UsageError(std::string(channel.status().message()));
  const auto connect_by =
      std::chrono::system_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(connect_timeout * 1000));
  if (!(*channel)->WaitForConnected(connect_by)) {
    std::fprintf(stderr, "tcm-mixed-load: cannot connect to %s\n", absl::GetFlag(FLAGS_server).c_str());
    return 1;
  }
  auto stub = v1::TcmService::NewStub(*channel);
  auto options = OptionsFor(*stub, absl::GetFlag(FLAGS_model));
  if (!options.ok()) {
    std::fprintf(stderr, "tcm-mixed-load: %s\n", std::string(options.status().message()).c_str());
    return 1;
  }
  options->max_images = max_images;
  options->stream_fraction = absl::GetFlag(FLAGS_stream_fraction);
  options->two_step_fraction = absl::GetFlag(FLAGS_two_step_fraction);
  options->misbehaving_fraction = absl::GetFlag(FLAGS_misbehaving_fraction);
  options->max_delay_ms = max_delay_ms;

  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  std::printf("mixed load: model %s, %d callers, seed %llu\n", options->model.c_str(), callers,
              static_cast<unsigned long long>(seed));
  std::fflush(stdout);
  std::atomic<bool> stop{false};
  traffic::TrafficReport report;
  std::thread traffic([&] {
    report = traffic::RunTraffic(*stub, seed, callers, absl::GetFlag(FLAGS_calls_per_caller), *options, stop);
    stop = true;
  });
  const auto start = std::chrono::steady_clock::now();
  double next_progress = every;
  while (!stop) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (elapsed >= seconds) stop = true;
    if (every > 0 && elapsed >= next_progress && !stop) {
      std::printf("  %.0f s of %.0f\n", elapsed, seconds);
      std::fflush(stdout);
      next_progress += every;
    }
  }
  traffic.join();
  std::printf("%s", report.Summary().c_str());
  std::printf("result: %s (seed %llu)\n", report.unexpected_count == 0 ? "PASS" : "FAIL",
              static_cast<unsigned long long>(seed));
  return report.unexpected_count == 0 ? 0 : 1;
}

}  // namespace
}  // namespace tcm

int main(int argc, char** argv) {
  tcm::SetUsage(
      "Sends mixed, misbehaving traffic to a tcm-server and checks every call's outcome.\n"
      "  tcm-mixed-load --server 127.0.0.1:50051 --seconds 120 --callers 4 --seed 7");
  std::vector<std::string> storage;
  std::vector<char*> args = tcm::NormalizeFlagNames(argc, argv, &storage);
  if (absl::Status only_flags =
          tcm::NoPositionalArguments(absl::ParseCommandLine(static_cast<int>(args.size()), args.data()));
      !only_flags.ok()) {
    tcm::PrintToolError("tcm-mixed-load", only_flags.message());
    return tcm::kToolFailureExitCode;
  }
  return tcm::Run();
}
