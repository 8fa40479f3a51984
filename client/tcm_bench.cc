// tcm-bench: a load generator for tcm-server, in the spirit of Triton's
// perf_analyzer.
//
//   tcm-bench --server localhost:50051 --concurrency 1,2,4,8
//   tcm-bench --rates 5,10,20 --arrivals poisson --json bench.json
//   tcm-bench --raw --model_dir models/NAME                 (the model alone, no server)
//   tcm-bench --server localhost:50051 --model_dir models/NAME --raw --concurrency 1,8   (both)
//
// Closed loop (--concurrency N): N client threads, each keeping one Generate
// call in flight with the synchronous gRPC API. Open loop (--rates R):
// requests are sent at R per second (constant gaps, or Poisson arrivals) with
// the callback API, whatever the responses do; an arrival that finds
// --max_inflight calls outstanding is dropped and counted, as are those still
// due when the level's time is up (the sender fell behind). What a level
// measures (windows, percentiles) is described in client/load_core.h.
//
// Exit status: 0 done; 1 the server cannot be reached or a level had no
// successful request; 2 bad flags (one line on stderr).
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client_common.h"
#include "client/load_core.h"
#include "client/load_raw.h"
#include "client/response_check.h"
#include "common/flags_usage.h"
#include "common/utf8.h"
#include "common/write_file.h"
#include "model/cpu_threads.h"
#include "tcm/v1/tcm_service.grpc.pb.h"

// Load.
ABSL_FLAG(std::string, concurrency, "",
          "Closed-loop levels: numbers of clients, each keeping one call in flight, comma-separated (e.g. 1,2,4,8). "
          "Empty = 1,2,4,8 unless --rates is given.");
ABSL_FLAG(std::string, rates, "",
          "Open-loop levels: offered requests per second, comma-separated (e.g. 5,10,20), each at most 100000.");
ABSL_FLAG(std::string, arrivals, "constant",
          "Open-loop arrivals: constant (request k at k/rate) or poisson (exponential gaps from --seed).");
ABSL_FLAG(double, duration, 10, "Measurement window of each level, seconds.");
ABSL_FLAG(double, warmup, 2, "Load before each level's window, not measured, seconds.");
ABSL_FLAG(int, max_inflight, 1000, "Open loop: most calls outstanding; an arrival beyond it is dropped and counted.");
// Requests.
ABSL_FLAG(std::string, model, "", "Model name; empty = the server's default model.");
ABSL_FLAG(double, two_step_fraction, 0.5,
          "Share of requests with steps=2, the rest steps=1, chosen per request from a generator seeded with --seed.");
ABSL_FLAG(int, images_per_request, 1, "num_images of every request.");
ABSL_FLAG(int64_t, class_label, -1, "Class of every image; -1 = a random class per image (the server's choice).");
ABSL_FLAG(std::string, format, "png", "Image format asked for: png or raw.");
ABSL_FLAG(int, priority, 0, "Priority level of every request: 1 is the highest; 0 = the model's default level.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the request mix, of the requests' seeds and of Poisson arrivals.");
ABSL_FLAG(double, timeout, 60,
          "Deadline of each call, seconds, at most 86400 (exceeded calls count as DEADLINE_EXCEEDED). With --rates "
          "this is an open-loop run with per-call deadlines: the JSON's goodput_images_per_s counts the images of "
          "calls answered within it.");
ABSL_FLAG(double, connect_timeout, 10,
          "How long to wait for the server's connection at start, seconds, at most 86400.");
// Output.
ABSL_FLAG(std::string, json, "",
          "Also write the flags and one object per level to this JSON file, replaced whole once the run is over "
          "(left as it was when the run fails).");
// In-process model throughput.
ABSL_FLAG(bool, raw, false,
          "Measure the model in this process (needs --model_dir) instead of the server, on the server's default "
          "path (bf16 where the CPU has native bf16, else fp32; channels-last); with --server, --concurrency or "
          "--rates also given, the raw cases run first, then the service levels.");
ABSL_FLAG(std::string, model_dir, "", "Model directory for --raw.");
ABSL_FLAG(int, batch_size, 0,
          "--raw: images per forward pass; 0 = the model's batching.max_batch_size, else 16 (the server's default).");
ABSL_FLAG(double, raw_seconds, 3, "--raw: least timed duration of each case's throughput and of its latency.");
ABSL_FLAG(int, threads, 0, "--raw: LibTorch intra-op threads, 0 to 1024; 0 = one per core.");

namespace tcm {
namespace {

using Clock = std::chrono::steady_clock;
using load::CallRecord;
using load::LevelSummary;
using load::LoadMode;

struct FlagGroup {
  const char* title;
  std::vector<const char*> names;
};

const std::vector<FlagGroup>& FlagGroups() {
  static const auto* groups = new std::vector<FlagGroup>{
      {"Load levels", {"concurrency", "rates", "arrivals", "duration", "warmup", "max_inflight"}},
      {"Requests",
       {"server", "model", "two_step_fraction", "images_per_request", "class_label", "format", "priority", "seed",
        "timeout", "connect_timeout", "tls", "tls_ca", "tls_cert", "tls_key"}},
      {"Output", {"json"}},
      {"In-process model throughput", {"raw", "model_dir", "batch_size", "raw_seconds", "threads"}},
  };
  return *groups;
}

bool IsOurFlag(absl::string_view name) {
  for (const auto& group : FlagGroups())
    for (const char* n : group.names)
      if (name == n) return true;
  return false;
}

void PrintHelp() {
  std::printf(
      "tcm-bench: load generator for tcm-server (closed-loop concurrency sweep, open-loop request rates), and the\n"
      "model's in-process throughput for comparison.\n"
      "  tcm-bench --server localhost:50051 --concurrency 1,2,4,8 --json bench.json\n"
      "  tcm-bench --rates 5,10,20 [--arrivals poisson]\n"
      "  tcm-bench --raw --model_dir models/NAME [--server localhost:50051 --concurrency 1,8]\n"
      "Per level: requests/s and images/s (OK responses arriving in the window), p50/p90/p99 latency in ms and\n"
      "errors by status code (requests sent in the window, each followed to its end). Exit status: 0 done,\n"
      "1 server unreachable or a level without any successful request, 2 bad flags.\n");
  for (const auto& group : FlagGroups()) {
    std::printf("\n%s:\n", group.title);
    for (const char* name : group.names) {
      const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
      std::string def = flag->DefaultValue();
      if (flag->IsOfType<std::string>()) def = absl::StrCat("\"", def, "\"");
      std::printf("  --%s (default: %s)\n      %s\n", name, def.c_str(), flag->Help().c_str());
    }
  }
}

int FlagError(const std::string& message) {
  std::fprintf(stderr, "tcm-bench: %s (see --help)\n", message.c_str());
  return 2;
}

// Parses argv into the flags above: --name=value, --name value, --bool,
// --nobool; dashes or underscores in names. Returns -1 to go on, else an exit
// status (0 after --help). `given` receives the names set on the command line.
int ParseArgs(int argc, char** argv, std::set<std::string>* given) {
  std::vector<std::string> storage;
  std::vector<char*> args = NormalizeFlagNames(argc, argv, &storage);
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string arg = args[i];
    if (arg == "--help" || arg == "-h" || arg == "--helpfull" || arg == "-help") {
      PrintHelp();
      return 0;
    }
    if (arg == "--") return FlagError("unexpected '--'");
    if (!absl::StartsWith(arg, "-") || arg == "-")
      return FlagError(absl::StrCat("unexpected argument '", PrintableLine(arg), "'"));
    std::string body = arg.substr(absl::StartsWith(arg, "--") ? 2 : 1);
    const size_t eq = body.find('=');
    std::string name = body.substr(0, eq);
    const bool has_value = eq != std::string::npos;
    std::string value = has_value ? body.substr(eq + 1) : "";
    absl::CommandLineFlag* flag = IsOurFlag(name) ? absl::FindCommandLineFlag(name) : nullptr;
    if (flag == nullptr && absl::StartsWith(name, "no") && IsOurFlag(name.substr(2))) {
      absl::CommandLineFlag* negated = absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>() && !has_value) {
        flag = negated;
        name = name.substr(2);
        value = "false";
      }
    }
    if (flag == nullptr) return FlagError(absl::StrCat("unknown flag --", name));
    if (!has_value && value.empty()) {
      if (flag->IsOfType<bool>()) {
        value = "true";
      } else if (i + 1 >= args.size()) {
        return FlagError(absl::StrCat("--", name, ": needs a value"));
      } else if (const std::string next = PrintableLine(argv[i + 1]); absl::StartsWith(next, "--")) {
        // The value was most likely left out: "--json --raw" is not a report named "--raw".
        return FlagError(absl::StrCat(
            "--", name, ": needs a value; got the flag ", next,
            flag->IsOfType<std::string>() ? absl::StrCat(" (write --", name, "=", next, " for such a name)") : ""));
      } else {
        value = args[++i];
      }
    }
    std::string error;
    if (!flag->ParseFrom(value, &error))
      return FlagError(absl::StrCat("--", name, ": '", value, "' is not a valid ",
                                    flag->IsOfType<bool>()                               ? "boolean"
                                    : flag->IsOfType<double>()                           ? "number"
                                    : flag->IsOfType<int>() || flag->IsOfType<int64_t>() ? "integer"
                                    : flag->IsOfType<uint64_t>()                         ? "unsigned integer"
                                                                                         : "value"));
    given->insert(name);
  }
  return -1;
}

// Everything the run needs, validated.
struct Settings {
  std::vector<int> concurrency;
  std::vector<double> rates;
  load::Arrivals arrivals = load::Arrivals::kConstant;
  double duration = 0, warmup = 0;
  int max_inflight = 0;
  std::string server, model;
  double two_step_fraction = 0;
  int images_per_request = 1;
  int64_t class_label = -1;
  v1::ImageFormat format = v1::IMAGE_FORMAT_PNG;
  uint64_t seed = 0;
  int priority = 0;
  double timeout = 0, connect_timeout = 0;
  std::string json;
  bool raw = false;
  bool service = true;
  load::RawOptions raw_options;
};

// Returns an empty string when the flags are consistent, else the error.
std::string ReadSettings(const std::set<std::string>& given, Settings* s) {
  auto ok_positive = [](double v) { return std::isfinite(v) && v > 0; };
  s->raw = absl::GetFlag(FLAGS_raw);
  s->service = !s->raw || given.count("server") || given.count("concurrency") || given.count("rates");
  const std::string concurrency = absl::GetFlag(FLAGS_concurrency), rates = absl::GetFlag(FLAGS_rates);
  if (!concurrency.empty()) {
    auto levels = load::ParsePositiveInts(concurrency, "concurrency");
    if (!levels.ok()) return std::string(levels.status().message());
    for (int level : *levels)
      if (level > load::kMaxClientThreads)
        return absl::StrCat("--concurrency: each level must be at most ", load::kMaxClientThreads, ", got ", level);
    s->concurrency = *levels;
  }
  if (!rates.empty()) {
    auto levels = load::ParsePositiveDoubles(rates, "rates");
    if (!levels.ok()) return std::string(levels.status().message());
    for (double level : *levels)
      if (level > load::kMaxRate)
        return absl::StrCat("--rates: each rate must be at most ", load::kMaxRate, " requests per second, got ", level);
    s->rates = *levels;
  }
  if (s->service && s->concurrency.empty() && s->rates.empty()) s->concurrency = {1, 2, 4, 8};
  auto arrivals = load::ParseArrivals(absl::GetFlag(FLAGS_arrivals));
  if (!arrivals.ok()) return std::string(arrivals.status().message());
  s->arrivals = *arrivals;
  s->duration = absl::GetFlag(FLAGS_duration);
  s->warmup = absl::GetFlag(FLAGS_warmup);
  if (!(s->duration > 0 && s->duration <= kMaxFlagSeconds))
    return absl::StrCat("--duration: must be a number of seconds in (0, ", kMaxFlagSeconds, "], got ", s->duration);
  if (!(s->warmup >= 0 && s->warmup <= kMaxFlagSeconds))
    return absl::StrCat("--warmup: must be a number of seconds in [0, ", kMaxFlagSeconds, "], got ", s->warmup);
  s->max_inflight = absl::GetFlag(FLAGS_max_inflight);
  if (s->max_inflight < 1) return "--max_inflight: must be at least 1";
  s->server = absl::GetFlag(FLAGS_server);
  s->model = absl::GetFlag(FLAGS_model);
  s->two_step_fraction = absl::GetFlag(FLAGS_two_step_fraction);
  if (!(s->two_step_fraction >= 0 && s->two_step_fraction <= 1)) return "--two_step_fraction: must be in [0, 1]";
  s->images_per_request = absl::GetFlag(FLAGS_images_per_request);
  if (s->images_per_request < 1) return "--images_per_request: must be at least 1";
  s->class_label = absl::GetFlag(FLAGS_class_label);
  if (s->class_label < -1) return "--class_label: must be a class index, or -1 for a random class";
  const std::string format = absl::GetFlag(FLAGS_format);
  if (format == "png") {
    s->format = v1::IMAGE_FORMAT_PNG;
  } else if (format == "raw") {
    s->format = v1::IMAGE_FORMAT_RAW;
  } else {
    return absl::StrCat("--format: '", format, "' is not png or raw");
  }
  s->seed = absl::GetFlag(FLAGS_seed);
  s->priority = absl::GetFlag(FLAGS_priority);
  if (s->priority < 0) return "--priority: must be at least 0 (0 = the model's default level)";
  s->timeout = absl::GetFlag(FLAGS_timeout);
  s->connect_timeout = absl::GetFlag(FLAGS_connect_timeout);
  for (const auto& [name, value] :
       {std::pair{"--timeout", s->timeout}, std::pair{"--connect_timeout", s->connect_timeout}})
    if (!(value > 0 && value <= kMaxFlagSeconds))
      return absl::StrCat(name, ": must be a number of seconds in (0, ", kMaxFlagSeconds, "], got ", value);
  s->json = absl::GetFlag(FLAGS_json);
  if (!s->json.empty())
    if (std::string problem = WritableFileProblem(s->json); !problem.empty())
      return absl::StrCat("--json: cannot write ", s->json, ": ", problem);

  const std::string model_dir = absl::GetFlag(FLAGS_model_dir);
  if (s->raw && model_dir.empty()) return "--raw needs --model_dir";
  if (!s->raw && !model_dir.empty()) return "--model_dir is used only with --raw";
  auto& r = s->raw_options;
  r.model_dir = model_dir;
  r.batch_size = absl::GetFlag(FLAGS_batch_size);
  if (r.batch_size < 0) return "--batch_size: must be >= 0";
  r.seconds = absl::GetFlag(FLAGS_raw_seconds);
  if (!ok_positive(r.seconds)) return "--raw_seconds: must be a positive number of seconds";
  r.threads = absl::GetFlag(FLAGS_threads);
  if (absl::Status threads = CheckThreadsFlag(r.threads); !threads.ok()) return std::string(threads.message());
  r.two_step_fraction = s->two_step_fraction;
  r.png = s->format == v1::IMAGE_FORMAT_PNG;
  r.class_label = s->class_label;
  r.seed = s->seed;
  return "";
}

double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

class Bench {
 public:
  Bench(const Settings& settings, std::unique_ptr<v1::TcmService::Stub> stub, std::string model)
      : s_(settings),
        stub_(std::move(stub)),
        model_(std::move(model)),
        mix_(settings.seed, settings.two_step_fraction) {}

  LevelSummary Closed(int clients) {
    const double end = s_.warmup + s_.duration;
    const auto t0 = Clock::now();
    std::atomic<uint64_t> counter{0};
    std::vector<std::vector<CallRecord>> per_thread(clients);
    std::atomic<bool> stop{false};
    const absl::Status ran = load::RunOnThreads(clients, stop, [&](int c) {
      while (!stop && Since(t0) < end) {
        const uint64_t n = counter.fetch_add(1);
        v1::GenerateRequest request = Request(n);
        grpc::ClientContext context;
        SetDeadline(&context);
        v1::GenerateResponse response;
        CallRecord record;
        record.steps = static_cast<int>(request.steps());
        record.start = Since(t0);
        const grpc::Status status = stub_->Generate(&context, request, &response);
        record.end = Since(t0);
        Fill(request, status, response, &record);
        per_thread[c].push_back(record);
      }
    });
    if (!ran.ok()) throw std::runtime_error(absl::StrCat("--concurrency ", clients, ": ", ran.message()));
    std::vector<CallRecord> records;
    for (auto& v : per_thread) records.insert(records.end(), v.begin(), v.end());
    return load::Summarize(LoadMode::kConcurrency, clients, records, s_.warmup, end, 0);
  }

  LevelSummary Open(double rate) {
    // Shared with the callbacks, which may run on gRPC's threads.
    struct State {
      std::mutex mu;
      std::condition_variable done;
      int inflight = 0;
      std::vector<CallRecord> records;
    };
    struct Call {
      grpc::ClientContext context;
      v1::GenerateRequest request;
      v1::GenerateResponse response;
      CallRecord record;
    };
    auto state = std::make_shared<State>();
    const double end = s_.warmup + s_.duration;
    load::ArrivalSchedule schedule(rate, s_.arrivals, load::SplitMix64(s_.seed ^ 0xa5a5a5a5ULL));
    const auto t0 = Clock::now();
    const auto wait_until = [t0](double at) {
      std::this_thread::sleep_until(t0 +
                                    std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(at)));
    };
    const auto send = [&](uint64_t n, double) {
      {
        std::lock_guard<std::mutex> lock(state->mu);
        if (state->inflight >= s_.max_inflight) return false;
        ++state->inflight;
      }
      auto* call = new Call;
      call->request = Request(n);
      SetDeadline(&call->context);
      call->record.steps = static_cast<int>(call->request.steps());
      call->record.start = Since(t0);
      stub_->async()->Generate(&call->context, &call->request, &call->response, [state, call, t0](grpc::Status status) {
        call->record.end = Since(t0);
        Fill(call->request, status, call->response, &call->record);
        const CallRecord record = call->record;
        delete call;
        std::lock_guard<std::mutex> lock(state->mu);
        state->records.push_back(record);
        --state->inflight;
        state->done.notify_all();
      });
      return true;
    };
    const load::ArrivalCounts counts = load::RunArrivals(
        schedule, s_.warmup, end, [t0] { return Since(t0); }, wait_until, send);
    std::unique_lock<std::mutex> lock(state->mu);
    state->done.wait(lock, [&] { return state->inflight == 0; });
    return load::Summarize(LoadMode::kRate, rate, state->records, s_.warmup, end, counts.dropped);
  }

 private:
  v1::GenerateRequest Request(uint64_t n) const {
    const load::RequestPlan plan = mix_.Plan(n);
    v1::GenerateRequest request;
    request.set_model(model_);
    if (s_.class_label >= 0) request.set_class_label(s_.class_label);
    request.set_steps(plan.steps);
    request.set_num_images(s_.images_per_request);
    request.set_seed(plan.seed);
    request.set_format(s_.format);
    request.set_priority(static_cast<uint32_t>(s_.priority));
    return request;
  }

  void SetDeadline(grpc::ClientContext* context) const {
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::microseconds(static_cast<int64_t>(s_.timeout * 1e6)));
  }

  // A response that does not hold what was asked counts as DATA_LOSS.
  static void Fill(const v1::GenerateRequest& request, const grpc::Status& status, const v1::GenerateResponse& response,
                   CallRecord* record) {
    record->code = static_cast<int>(status.error_code());
    if (!status.ok()) return;
    if (!CheckGenerateResponse(request, response).ok()) {
      record->code = static_cast<int>(grpc::StatusCode::DATA_LOSS);
      return;
    }
    record->images = response.images_size();
    record->server_total = response.timings().total_seconds();
    record->server_queue = response.timings().queue_seconds();
    record->server_compute = response.timings().compute_seconds();
  }

  const Settings& s_;
  std::unique_ptr<v1::TcmService::Stub> stub_;
  const std::string model_;
  const load::RequestMix mix_;
};

nlohmann::json FlagsJson() {
  nlohmann::json flags = nlohmann::json::object();
  for (const auto& group : FlagGroups()) {
    for (const char* name : group.names) {
      const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
      const std::string value = flag->CurrentValue();
      if (flag->IsOfType<std::string>()) {
        flags[name] = value;
      } else {
        flags[name] = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
        if (flags[name].is_discarded()) flags[name] = value;
      }
    }
  }
  return flags;
}

int RuntimeError(const std::string& message) {
  std::fprintf(stderr, "tcm-bench: %s\n", message.c_str());
  return 1;
}

// A failure of the run: INVALID_ARGUMENT is the command line's fault (exit 2,
// "see --help"); anything else is the run's (exit 1).
int Exit(const absl::Status& status) {
  if (status.ok()) return 0;
  return absl::IsInvalidArgument(status) ? FlagError(std::string(status.message()))
                                         : RuntimeError(std::string(status.message()));
}

// The served model a service run measures, as ListModels describes it.
struct ServedModel {
  std::unique_ptr<v1::TcmService::Stub> stub;
  std::string name;
  std::string line;     // for the table's heading
  nlohmann::json json;  // the report's "server" object
};

// Connects and finds the model to measure (--model, or the server's default).
// Done first, so that an unreachable server fails at once rather than after the raw cases.
absl::StatusOr<ServedModel> ConnectToModel(const Settings& s) {
  auto channel = MakeChannel(ChannelOptionsFromFlags());
  if (!channel.ok()) return absl::InvalidArgumentError(channel.status().message());
  const auto connect_deadline = [&] {
    return std::chrono::system_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(s.connect_timeout * 1e3));
  };
  if (!(*channel)->WaitForConnected(connect_deadline()))
    return absl::UnavailableError(absl::StrFormat("cannot connect to %s within %g s", s.server, s.connect_timeout));
  ServedModel served;
  served.stub = v1::TcmService::NewStub(*channel);
  grpc::ClientContext context;
  context.set_deadline(connect_deadline());
  v1::ListModelsResponse models;
  const grpc::Status status = served.stub->ListModels(&context, v1::ListModelsRequest(), &models);
  if (!status.ok())
    return absl::UnavailableError(absl::StrCat("ListModels on ", s.server,
                                               " failed: ", load::StatusCodeName(status.error_code()), ": ",
                                               status.error_message()));
  const v1::ModelInfo* info = nullptr;
  std::vector<std::string> names;
  for (const auto& m : models.models()) {
    names.push_back(m.name());
    if (info == nullptr && (s.model.empty() ? m.is_default() : m.name() == s.model)) info = &m;
  }
  if (info == nullptr && s.model.empty() && models.models_size() > 0) info = &models.models(0);
  if (info == nullptr)
    return absl::NotFoundError(absl::StrCat("model '", s.model, "' is not served by ", s.server,
                                            " (it serves: ", absl::StrJoin(names, ", "), ")"));
  served.name = info->name();
  if (s.class_label >= 0 && s.class_label >= static_cast<int64_t>(info->num_classes()))
    return absl::InvalidArgumentError(
        info->num_classes() == 0 ? absl::StrCat("--class_label: model '", served.name, "' is unconditional; use -1")
                                 : absl::StrCat("--class_label: ", s.class_label, " is outside [0, ",
                                                info->num_classes(), ") for model '", served.name, "'"));
  served.line = absl::StrFormat("%s (%s %ux%ux%u, %u classes)", served.name, info->architecture(), info->resolution(),
                                info->resolution(), info->channels(), info->num_classes());
  served.json = {{"address", s.server},
                 {"model", served.name},
                 {"architecture", info->architecture()},
                 {"resolution", info->resolution()},
                 {"channels", info->channels()},
                 {"num_classes", info->num_classes()}};
  return served;
}

// --raw: the network in this process; prints its table and returns its report.
absl::StatusOr<nlohmann::json> RunRawCases(const Settings& s, const std::string& request_line) {
  std::printf("raw: model directory %s in this process; %s\n", s.raw_options.model_dir.c_str(), request_line.c_str());
  std::fflush(stdout);
  absl::StatusOr<load::RawReport> raw;
  try {
    raw = load::RunRaw(s.raw_options);
  } catch (const std::exception& e) {
    raw = absl::InternalError(e.what());
  }
  if (!raw.ok()) {
    const std::string message = absl::StrCat("--raw: ", raw.status().message());
    return raw.status().code() == absl::StatusCode::kInternal ? absl::InternalError(message)
                                                              : absl::InvalidArgumentError(message);
  }
  std::printf("raw: %s, %d threads; img/s at the batch size, latency of one image alone\n", raw->model.c_str(),
              raw->threads);
  std::printf("%s", load::RawTable(*raw).c_str());
  std::fflush(stdout);
  return load::ToJson(*raw);
}

// The service levels, closed loop then open loop; prints one row per level
// into the table and appends its object to `levels`. Returns whether every
// level had at least one successful request.
bool RunServiceLevels(const Settings& s, ServedModel served, const std::string& request_line, nlohmann::json* levels) {
  std::printf("service: %s, model %s; %s; %g s warm-up + %g s window per level; open loop %s arrivals\n",
              s.server.c_str(), served.line.c_str(), request_line.c_str(), s.warmup, s.duration,
              load::ArrivalsName(s.arrivals));
  std::printf("%s\n", load::TableHeader().c_str());
  std::fflush(stdout);
  Bench bench(s, std::move(served.stub), served.name);
  *levels = nlohmann::json::array();
  bool every_level_served = true;
  auto emit = [&](const LevelSummary& summary) {
    std::printf("%s\n", load::TableRow(summary).c_str());
    std::fflush(stdout);
    levels->push_back(load::ToJson(summary));
    // A level served nothing when no call of it answered OK: none inside the
    // window and none of those sent in it (a call slower than the window, on a
    // busy machine, still served).
    if (summary.ok == 0 && summary.latency_count == 0) every_level_served = false;
  };
  for (int clients : s.concurrency) emit(bench.Closed(clients));
  for (double rate : s.rates) emit(bench.Open(rate));
  return every_level_served;
}

int Run(const std::set<std::string>& given) {
  Settings s;
  if (std::string error = ReadSettings(given, &s); !error.empty()) return FlagError(error);

  nlohmann::json report = {
      {"tool", "tcm-bench"},
      {"started_at", absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone())},
      {"flags", FlagsJson()},
      {"definitions",
       "requests_per_s/images_per_s: OK responses arriving in the window / window_s; latency and "
       "errors: requests sent in the window, each followed to its end; latency in ms, client side"}};

  std::optional<ServedModel> served;
  if (s.service) {
    absl::StatusOr<ServedModel> connected = ConnectToModel(s);
    if (!connected.ok()) return Exit(connected.status());
    report["server"] = connected->json;
    served = std::move(*connected);
  }

  const std::string request_line =
      absl::StrFormat("%d image(s)/request, %.0f%% 2-step (seed %u), %s, class %s", s.images_per_request,
                      s.two_step_fraction * 100, s.seed, s.format == v1::IMAGE_FORMAT_PNG ? "png" : "raw",
                      s.class_label >= 0 ? absl::StrCat(s.class_label) : std::string("random"));

  if (s.raw) {
    absl::StatusOr<nlohmann::json> raw = RunRawCases(s, request_line);
    if (!raw.ok()) return Exit(raw.status());
    report["raw"] = *std::move(raw);
  }

  bool every_level_served = true;
  if (served) {
    if (s.raw) std::printf("\n");
    every_level_served = RunServiceLevels(s, *std::move(served), request_line, &report["levels"]);
  }

  if (!s.json.empty())
    if (absl::Status written = WriteFileAtomically(s.json, report.dump(2) + "\n"); !written.ok())
      return RuntimeError(absl::StrCat("--json: ", written.message()));
  if (!every_level_served) return RuntimeError("a level had no successful request (see the errors column)");
  return 0;
}

}  // namespace
}  // namespace tcm

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Load generator for tcm-server; see --help.");
  std::set<std::string> given;
  if (const int code = tcm::ParseArgs(argc, argv, &given); code >= 0) return code;
  try {
    return tcm::Run(given);
  } catch (const std::exception& e) {  // a level that could not start its threads
    return tcm::RuntimeError(e.what());
  }
}
