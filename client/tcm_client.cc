// tcm-client: generates images with a tcm-server and writes PNG files.
//
//   tcm-client --class 3 --steps 2 --num 4
//   tcm-client --server host:50051 --model fashion-mnist-tcm --num 16 --grid
//   tcm-client --list-models
//   tcm-client --health
//   tcm-client --health --health_every 0.25 --health_checks 40
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/client_common.h"
#include "client/response_check.h"
#include "common/flags_usage.h"
#include "common/image_grid.h"
#include "common/png_encoder.h"
#include "common/status_macros.h"
#include "common/tool_main.h"
#include "common/write_file.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tcm/v1/tcm_service.grpc.pb.h"

ABSL_FLAG(std::string, model, "", "Model name; empty = the server's default model.");
ABSL_FLAG(int64_t, class_label, -1, "Class of every image (also --class); -1 = a random class per image.");
ABSL_FLAG(int, steps, 0, "Network evaluations per image: 1 or 2; 0 = the model's default.");
ABSL_FLAG(int, num, 1, "Images to generate.");
ABSL_FLAG(int64_t, seed, -1, "Seed; -1 = the server picks one (printed).");
ABSL_FLAG(int, priority, 0, "Priority level: 1 is the highest; 0 = the model's default level.");
ABSL_FLAG(std::string, out, "samples", "Folder for the PNG files (created if missing).");
ABSL_FLAG(bool, grid, false, "Write one PNG with all images in a grid instead of one file per image.");
ABSL_FLAG(bool, preview, false,
          "With 2 steps: stream the call and also write each image's first-step result (the 1-step image, "
          "files ending _preview.png), which the server sends as soon as it exists.");
ABSL_FLAG(bool, list_models, false, "List the server's models and exit.");
ABSL_FLAG(std::string, load_model, "",
          "Load the repository's model directory of this name, or reload it as a new version, and exit (the "
          "server must run with --model_control=explicit; a load takes the whole --timeout).");
ABSL_FLAG(std::string, unload_model, "",
          "Stop serving this model and exit (the server must run with --model_control=explicit).");
ABSL_FLAG(bool, health, false, "Check the server's health (or --model's) and exit 0 if SERVING, else 1.");
ABSL_FLAG(double, health_every, 0,
          "With --health: check again every this many seconds on one connection, printing one line per check, "
          "'STATUS MILLISECONDS' (STATUS is SERVING, NOT_SERVING, ... or the call's error code); exit 0 if every "
          "check was SERVING. 0: check once.");
ABSL_FLAG(int, health_checks, 0, "With --health_every: how many checks; 0 = until the process is stopped.");
ABSL_FLAG(double, timeout, 60, "Call deadline, seconds.");

namespace tcm {
namespace {

// "DEADLINE_EXCEEDED", ...: gRPC's code numbers are absl's.
std::string StatusCodeName(int code) { return absl::StatusCodeToString(static_cast<absl::StatusCode>(code)); }

int Error(const std::string& message) {
  std::fprintf(stderr, "tcm-client: %s\n", message.c_str());
  return 1;
}

// Returns an empty string when the command line asks for one thing, else the
// error: at most one of --health, --list_models, --load_model and
// --unload_model (none: generate), and --health_every and --health_checks only
// where they apply.
std::string ModeConflict() {
  std::vector<std::string> modes;
  if (absl::GetFlag(FLAGS_health)) modes.push_back("--health");
  if (absl::GetFlag(FLAGS_list_models)) modes.push_back("--list_models");
  if (!absl::GetFlag(FLAGS_load_model).empty()) modes.push_back("--load_model");
  if (!absl::GetFlag(FLAGS_unload_model).empty()) modes.push_back("--unload_model");
  if (modes.size() > 1)
    return absl::StrCat("give at most one of --health, --list_models, --load_model, --unload_model; got ",
                        absl::StrJoin(modes, ", "));
  const bool health = absl::GetFlag(FLAGS_health);
  const double every = absl::GetFlag(FLAGS_health_every);
  const int checks = absl::GetFlag(FLAGS_health_checks);
  if (every != 0 && !health)
    return absl::StrCat("--health_every: applies only with --health, got --health_every ", every, " without it");
  if (checks != 0 && !health)
    return absl::StrCat("--health_checks: applies only with --health and --health_every, got --health_checks ", checks,
                        " without --health");
  if (checks != 0 && every == 0)
    return absl::StrCat("--health_checks: applies only with --health_every (a period between checks), got ",
                        "--health_checks ", checks, " without it");
  return "";
}

int Error(const grpc::Status& status) {
  return Error(absl::StrCat(StatusCodeName(status.error_code()), ": ", status.error_message()));
}

void SetDeadline(grpc::ClientContext* context) {
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(absl::GetFlag(FLAGS_timeout) * 1000)));
}

int ListModels(v1::TcmService::Stub& stub) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::ListModelsResponse response;
  grpc::Status status = stub.ListModels(&context, v1::ListModelsRequest(), &response);
  if (!status.ok()) return Error(status);
  for (const auto& m : response.models()) {
    std::printf("%s%s: version %u, %s %ux%ux%u, %u classes, default %u step(s), mid_t %.3f\n", m.name().c_str(),
                m.is_default() ? " (default)" : "", m.version(), m.architecture().c_str(), m.resolution(),
                m.resolution(), m.channels(), m.num_classes(), m.default_steps(), m.mid_t());
    if (m.class_names_size() > 0) std::printf("  classes: %s\n", absl::StrJoin(m.class_names(), ", ").c_str());
  }
  return 0;
}

int LoadModel(v1::TcmService::Stub& stub, const std::string& name) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::LoadModelRequest request;
  request.set_name(name);
  v1::LoadModelResponse response;
  grpc::Status status = stub.LoadModel(&context, request, &response);
  if (!status.ok()) return Error(status);
  std::printf("%s: version %u serving\n", response.model().name().c_str(), response.model().version());
  return 0;
}

int UnloadModel(v1::TcmService::Stub& stub, const std::string& name) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::UnloadModelRequest request;
  request.set_name(name);
  v1::UnloadModelResponse response;
  grpc::Status status = stub.UnloadModel(&context, request, &response);
  if (!status.ok()) return Error(status);
  std::printf("%s: unloaded\n", name.c_str());
  return 0;
}

grpc::Status CheckHealth(grpc::health::v1::Health::Stub& stub, grpc::health::v1::HealthCheckResponse* response) {
  grpc::ClientContext context;
  SetDeadline(&context);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(absl::GetFlag(FLAGS_model));
  return stub.Check(&context, request, response);
}

int Health(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = CheckHealth(*stub, &response);
  if (!status.ok()) return Error(status);
  const bool serving = response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  std::printf("%s\n", grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()).c_str());
  return serving ? 0 : 1;
}

// --health_every: checks on one channel at a fixed period, one line each.
int HealthRepeated(const std::shared_ptr<grpc::Channel>& channel, double every, int checks) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  const auto period = std::chrono::microseconds(static_cast<int64_t>(every * 1e6));
  auto next = std::chrono::steady_clock::now();
  bool all_serving = true;
  for (int n = 0; checks == 0 || n < checks; ++n) {
    const auto start = std::chrono::steady_clock::now();
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status = CheckHealth(*stub, &response);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    const std::string name = status.ok() ? grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())
                                         : StatusCodeName(status.error_code());
    all_serving = all_serving && name == "SERVING";
    std::printf("%s %.2f\n", name.c_str(), ms);
    std::fflush(stdout);
    if (checks != 0 && n + 1 == checks) break;
    next = std::max(next + period, std::chrono::steady_clock::now());  // a slow check does not bunch the next ones
    std::this_thread::sleep_until(next);
  }
  return all_serving ? 0 : 1;
}

// Tiles raw images into one grid image, ceil(sqrt(n)) columns. Requires a
// response that passed CheckGenerateResponse and CheckSameImageSize.
absl::StatusOr<std::string> Grid(const v1::GenerateResponse& response, int* width, int* height, int* channels) {
  const auto& first = response.images(0);
  const int n = response.images_size(), w = first.width(), h = first.height(), c = first.channels();
  const int cols = SquareGridColumns(n);
  const int rows = (n + cols - 1) / cols;
  constexpr uint64_t kMaxSide = 1 << 16;
  if (uint64_t{1} * cols * w > kMaxSide || uint64_t{1} * rows * h > kMaxSide)
    return absl::InvalidArgumentError(absl::StrCat("--grid: a grid of ", n, " images of ", w, "x", h,
                                                   " would be wider or taller than ", kMaxSide, " pixels"));
  std::vector<const uint8_t*> images(n);
  for (const v1::Image& image : response.images())
    images[image.index()] = reinterpret_cast<const uint8_t*>(image.data().data());
  *width = cols * w;
  *height = rows * h;
  *channels = c;
  return TileImages(images, w, h, c, cols);
}

grpc::Status Unary(v1::TcmService::Stub& stub, const v1::GenerateRequest& request, v1::GenerateResponse* response) {
  grpc::ClientContext context;
  SetDeadline(&context);
  return stub.Generate(&context, request, response);
}

// GenerateStream: the final images into `response`, the previews into
// `previews`, each with the model, steps and seed the messages carry.
grpc::Status Stream(v1::TcmService::Stub& stub, const v1::GenerateRequest& request, v1::GenerateResponse* response,
                    v1::GenerateResponse* previews) {
  grpc::ClientContext context;
  SetDeadline(&context);
  auto reader = stub.GenerateStream(&context, request);
  v1::GenerateStreamResponse message;
  while (reader->Read(&message)) {
    v1::GenerateResponse* into = message.preview() ? previews : response;
    into->set_model(message.model());
    into->set_steps(message.steps());
    into->set_seed(message.image().seed());
    *into->add_images() = std::move(*message.mutable_image());
  }
  grpc::Status status = reader->Finish();
  if (status.ok()) {
    auto by_index = [](const v1::Image& a, const v1::Image& b) { return a.index() < b.index(); };
    std::sort(response->mutable_images()->begin(), response->mutable_images()->end(), by_index);
    std::sort(previews->mutable_images()->begin(), previews->mutable_images()->end(), by_index);
  }
  return status;
}

// Checks `response` against `request` and writes its images (or their grid
// with --grid) into --out, file names ending in `suffix`; appends the paths.
absl::Status CheckAndWrite(const v1::GenerateRequest& request, const v1::GenerateResponse& response,
                           const std::string& suffix, std::vector<std::string>* written) {
  const bool grid = absl::GetFlag(FLAGS_grid);
  TCM_RETURN_IF_ERROR(CheckGenerateResponse(request, response));
  if (grid) TCM_RETURN_IF_ERROR(CheckSameImageSize(response));
  const std::filesystem::path out = absl::GetFlag(FLAGS_out);
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec) return absl::InternalError(absl::StrCat("--out ", out.string(), ": ", ec.message()));
  const std::string stem = absl::StrCat(response.model(), "_s", response.seed(), "_", response.steps(), "step");
  if (grid) {
    int w, h, c;
    auto pixels = Grid(response, &w, &h, &c);
    if (!pixels.ok()) return pixels.status();
    auto png = EncodePng(reinterpret_cast<const uint8_t*>(pixels->data()), w, h, c, /*fast=*/false);
    if (!png.ok()) return png.status();
    const auto path = out / (stem + "_grid" + suffix + ".png");
    TCM_RETURN_IF_ERROR(WriteFileAtomically(path.string(), *png));
    written->push_back(path.string());
    return absl::OkStatus();
  }
  for (const auto& image : response.images()) {
    const std::string label = image.class_label() >= 0 ? absl::StrCat("_c", image.class_label()) : "";
    const auto path = out / absl::StrCat(stem, label, "_", image.index(), suffix, ".png");
    TCM_RETURN_IF_ERROR(WriteFileAtomically(path.string(), image.data()));
    written->push_back(path.string());
  }
  return absl::OkStatus();
}

int Generate(v1::TcmService::Stub& stub) {
  v1::GenerateRequest request;
  request.set_model(absl::GetFlag(FLAGS_model));
  if (absl::GetFlag(FLAGS_class_label) < -1)
    return Error(absl::StrCat("--class: must be a class of the model (0 or more), or -1 for a random class ",
                              "per image, got ", absl::GetFlag(FLAGS_class_label)));
  if (absl::GetFlag(FLAGS_seed) < -1)
    return Error(
        absl::StrCat("--seed: must be 0 or more, or -1 for the server's choice, got ", absl::GetFlag(FLAGS_seed)));
  if (absl::GetFlag(FLAGS_class_label) >= 0) request.set_class_label(absl::GetFlag(FLAGS_class_label));
  const int steps = absl::GetFlag(FLAGS_steps), num = absl::GetFlag(FLAGS_num);
  if (steps < 0) return Error(absl::StrCat("--steps: must be 1 or 2, or 0 for the model's default, got ", steps));
  if (num < 1) return Error(absl::StrCat("--num: must be at least 1, got ", num));
  request.set_steps(absl::GetFlag(FLAGS_steps));
  request.set_num_images(absl::GetFlag(FLAGS_num));
  if (absl::GetFlag(FLAGS_seed) >= 0) request.set_seed(absl::GetFlag(FLAGS_seed));
  if (absl::GetFlag(FLAGS_priority) < 0)
    return Error(absl::StrCat("--priority: must be at least 0 (0 = the model's default level), got ",
                              absl::GetFlag(FLAGS_priority)));
  request.set_priority(absl::GetFlag(FLAGS_priority));
  const bool grid = absl::GetFlag(FLAGS_grid);
  request.set_format(grid ? v1::IMAGE_FORMAT_RAW : v1::IMAGE_FORMAT_PNG);
  const bool preview = absl::GetFlag(FLAGS_preview);
  request.set_preview(preview);

  v1::GenerateResponse response, previews;
  grpc::Status status = preview ? Stream(stub, request, &response, &previews) : Unary(stub, request, &response);
  if (!status.ok()) return Error(status);
  std::vector<std::string> written;
  if (absl::Status saved = CheckAndWrite(request, response, "", &written); !saved.ok())
    return Error(std::string(saved.message()));
  if (preview && response.steps() == 2) {
    if (absl::Status saved = CheckAndWrite(request, previews, "_preview", &written); !saved.ok())
      return Error(absl::StrCat("previews: ", saved.message()));
  }
  for (const auto& path : written) std::printf("wrote %s\n", path.c_str());
  if (preview) {
    std::printf("model %s, %u step(s), seed %llu: %d image(s) and %d preview(s) streamed\n", response.model().c_str(),
                response.steps(), static_cast<unsigned long long>(response.seed()), response.images_size(),
                previews.images_size());
    return 0;
  }
  const auto& t = response.timings();
  std::printf("model %s, %u step(s), seed %llu: server time %.1f ms (queue %.1f, compute %.1f, encode %.1f)\n",
              response.model().c_str(), response.steps(), static_cast<unsigned long long>(response.seed()),
              t.total_seconds() * 1e3, t.queue_seconds() * 1e3, t.compute_seconds() * 1e3, t.encode_seconds() * 1e3);
  return 0;
}

int Run() {
  if (std::string conflict = ModeConflict(); !conflict.empty()) return Error(conflict);
  const double timeout = absl::GetFlag(FLAGS_timeout);
  if (!(timeout > 0 && timeout <= kMaxFlagSeconds))
    return Error(absl::StrCat("--timeout: must be a number of seconds in (0, ", kMaxFlagSeconds, "], got ", timeout));
  auto channel = MakeChannel(ChannelOptionsFromFlags());
  if (!channel.ok()) return Error(std::string(channel.status().message()));
  if (absl::GetFlag(FLAGS_health)) {
    const double every = absl::GetFlag(FLAGS_health_every);
    const int checks = absl::GetFlag(FLAGS_health_checks);
    if (!(every >= 0 && every <= kMaxFlagSeconds))
      return Error(
          absl::StrCat("--health_every: must be a number of seconds in [0, ", kMaxFlagSeconds, "], got ", every));
    if (checks < 0) return Error(absl::StrCat("--health_checks: must be at least 0, got ", checks));
    return every > 0 ? HealthRepeated(*channel, every, checks) : Health(*channel);
  }
  auto stub = v1::TcmService::NewStub(*channel);
  if (absl::GetFlag(FLAGS_list_models)) return ListModels(*stub);
  if (!absl::GetFlag(FLAGS_load_model).empty()) return LoadModel(*stub, absl::GetFlag(FLAGS_load_model));
  if (!absl::GetFlag(FLAGS_unload_model).empty()) return UnloadModel(*stub, absl::GetFlag(FLAGS_unload_model));
  return Generate(*stub);
}

}  // namespace
}  // namespace tcm

int main(int argc, char** argv) {
  tcm::SetUsage(
      "Generates images with a tcm-server and writes PNG files.\n"
      "  tcm-client --class 3 --steps 2 --num 4\n"
      "  tcm-client --list-models | --health | --load_model NAME | --unload_model NAME");
  std::vector<std::string> storage;
  // `--class` is a C++ keyword as a flag name: accept it as --class_label.
  std::vector<char*> args = tcm::NormalizeFlagNames(argc, argv, &storage, {{"class", "class_label"}});
  if (absl::Status only_flags =
          tcm::NoPositionalArguments(absl::ParseCommandLine(static_cast<int>(args.size()), args.data()));
      !only_flags.ok())
    return tcm::Error(std::string(only_flags.message()));
  return tcm::Run();
}
