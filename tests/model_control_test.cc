// Model control against a real tcm-server: models loaded, reloaded as new
// versions and unloaded by call (--model_control=explicit) and by changes to
// the repository's directories (--model_control=poll), with traffic running.
// Every wait polls with a generous timeout; nothing depends on how fast the
// machine is.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/server_fixture.h"
#include "tests/server_test_util.h"

namespace tcm {
namespace {

namespace fs = std::filesystem;
using grpc::StatusCode;
using grpc::health::v1::HealthCheckResponse;
using testing::CallGenerate;
using testing::CheckHealth;
using testing::CompareImages;
using testing::FetchMetrics;
using testing::MakeRequest;
using testing::MetricOrZero;
using testing::MetricSum;
using testing::MetricValue;
using testing::ServerProcess;
using Labels = std::map<std::string, std::string>;

constexpr double kWaitSeconds = 120;

class ModelControlTest : public testing::ServerFixture {
 protected:
  // A repository holding only "cond"; "uncond" waits beside it in spare_ to
  // be copied in. Starts a server on it with `flags` (and the control gate
  // file `control_gate`, when given).
  std::unique_ptr<ServerProcess> StartWithCondOnly(const std::vector<std::string>& flags,
                                                   const std::string& control_gate = "") {
    repo_ = absl::StrCat(dir_.path(), "/repo");
    spare_ = absl::StrCat(dir_.path(), "/spare");
    auto written = testing::WriteTestModelRepository(repo_, {});
    if (!written.ok()) {
      ADD_FAILURE() << written.status();
      return nullptr;
    }
    fs::create_directories(spare_);
    fs::rename(fs::path(repo_) / "uncond", fs::path(spare_) / "uncond");
    ServerProcess::Options options;
    options.repository = repo_;
    options.extra_flags = flags;
    options.log_dir = dir_.path();
    options.control_gate_file = control_gate;
    auto server = ServerProcess::Start(options);
    if (!server.ok()) {
      ADD_FAILURE() << server.status();
      return nullptr;
    }
    logs_.push_back((*server)->log_path());
    return std::move(*server);
  }

  // Copies the spare "uncond" into the repository, files first into a hidden
  // folder and then renamed, as an operator would.
  void CopyUncondIn() {
    const fs::path staging = fs::path(repo_) / ".uncond.partial";
    fs::copy(fs::path(spare_) / "uncond", staging, fs::copy_options::recursive);
    fs::rename(staging, fs::path(repo_) / "uncond");
  }

  static v1::ListModelsResponse List(v1::TcmService::Stub& stub) {
    grpc::ClientContext context;
    context.set_deadline(testing::DeadlineIn(30));
    v1::ListModelsResponse list;
    const grpc::Status status = stub.ListModels(&context, v1::ListModelsRequest(), &list);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return list;
  }

  // Waits until tcm_model_load_failures_total{model} counts a failure.
  static void ExpectLoadFailureCounted(const ServerProcess& server, const std::string& model) {
    auto counted = testing::WaitForMetrics(
        server.metrics_port(),
        [&](const std::string& text) {
          return MetricOrZero(text, "tcm_model_load_failures_total", {{"model", model}}) >= 1;
        },
        kWaitSeconds);
    EXPECT_TRUE(counted.ok()) << counted.status();
  }

  // The served version of `name`; 0 when it is not listed.
  static unsigned VersionOf(v1::TcmService::Stub& stub, const std::string& name) {
    const v1::ListModelsResponse list = List(stub);
    for (const auto& m : list.models())
      if (m.name() == name) return m.version();
    return 0;
  }

  // Polls until `done` holds (with a test failure after kWaitSeconds).
  static bool WaitFor(const std::function<bool()>& done, const std::string& what) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(kWaitSeconds);
    while (std::chrono::steady_clock::now() < deadline) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ADD_FAILURE() << "timed out waiting for " << what;
    return false;
  }

  static grpc::Status Load(v1::TcmService::Stub& stub, const std::string& name, v1::LoadModelResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(testing::DeadlineIn(kWaitSeconds));
    v1::LoadModelRequest request;
    request.set_name(name);
    return stub.LoadModel(&context, request, response);
  }

  static grpc::Status Unload(v1::TcmService::Stub& stub, const std::string& name) {
    grpc::ClientContext context;
    context.set_deadline(testing::DeadlineIn(kWaitSeconds));
    v1::UnloadModelRequest request;
    request.set_name(name);
    v1::UnloadModelResponse response;
    return stub.UnloadModel(&context, request, &response);
  }

  // Calls on `model` (2 images, 2 steps) on their own thread until Stop():
  // every one must succeed.
  class Traffic {
   public:
    Traffic(const ServerProcess& server, const std::string& model)
        : thread_([this, stub = v1::TcmService::NewStub(server.NewChannel()), model] {
            while (!stop_) {
              auto result = CallGenerate(*stub, MakeRequest(model, 4, 2, 2, 9), 60);
              if (result.status.ok() && result.response.images_size() == 2) {
                ++ok_;
              } else if (failed_++ == 0) {
                first_failure_ =
                    absl::StrCat(static_cast<int>(result.status.error_code()), ": ", result.status.error_message());
              }
            }
          }) {}
    ~Traffic() { Stop(); }
    void Stop() {
      stop_ = true;
      if (thread_.joinable()) thread_.join();
    }
    int ok() const { return ok_; }
    int failed() const { return failed_; }
    const std::string& first_failure() const { return first_failure_; }  // after Stop()

   private:
    std::atomic<bool> stop_{false};
    std::atomic<int> ok_{0}, failed_{0};
    std::string first_failure_;
    std::thread thread_;
  };

  // The class names `name` is served with ({} when it is not listed).
  static std::vector<std::string> ClassNamesOf(v1::TcmService::Stub& stub, const std::string& name) {
    const v1::ListModelsResponse list = List(stub);
    for (const auto& m : list.models())
      if (m.name() == name) return {m.class_names().begin(), m.class_names().end()};
    return {};
  }

  // Copies directory `from` to `to` through a hidden staging folder, as an operator would.
  void CopyIn(const fs::path& from, const fs::path& to) {
    const fs::path staging = to.parent_path() / ("." + to.filename().string() + ".partial");
    fs::copy(from, staging, fs::copy_options::recursive);
    fs::rename(staging, to);
  }

  std::string repo_, spare_;
};

TEST_F(ModelControlTest, WithoutExplicitModeLoadAndUnloadAreRefusedNamingTheMode) {
  for (const std::string mode : {"none", "poll"}) {
    auto server = StartWithCondOnly({"--model_control", mode, "--repository_poll_s", "60"});
    ASSERT_NE(server, nullptr);
    auto stub = v1::TcmService::NewStub(server->NewChannel());
    v1::LoadModelResponse loaded;
    const grpc::Status load = Load(*stub, "cond", &loaded);
    EXPECT_EQ(load.error_code(), StatusCode::FAILED_PRECONDITION) << mode;
    EXPECT_NE(load.error_message().find("--model_control=" + mode), std::string::npos) << load.error_message();
    EXPECT_EQ(Unload(*stub, "cond").error_code(), StatusCode::FAILED_PRECONDITION) << mode;
    EXPECT_EQ(VersionOf(*stub, "cond"), 1u);
    StopCleanly(*server);
    fs::remove_all(repo_);
    fs::remove_all(spare_);
  }
}

TEST_F(ModelControlTest, ExplicitModeLoadsReloadsAndUnloadsOneModelByCall) {
  auto server = StartWithCondOnly({"--model_control", "explicit", "--cache_mb", "16"});
  ASSERT_NE(server, nullptr);
  auto stub = v1::TcmService::NewStub(server->NewChannel());
  ASSERT_EQ(List(*stub).models_size(), 1);
  EXPECT_EQ(VersionOf(*stub, "cond"), 1u);

  v1::LoadModelResponse loaded;
  grpc::Status status = Load(*stub, "nosuch", &loaded);
  EXPECT_EQ(status.error_code(), StatusCode::NOT_FOUND);
  EXPECT_NE(status.error_message().find("no model directory 'nosuch'"), std::string::npos) << status.error_message();
  EXPECT_EQ(Load(*stub, "../repo", &loaded).error_code(), StatusCode::INVALID_ARGUMENT);
  // A name the file system would read only up to its NUL byte ("cond"), and
  // one longer than any model name, are refused before a file is looked at:
  // no load is tried, so no failure is counted under the name.
  // A hidden staging folder is no model, though it holds a whole one.
  fs::copy(fs::path(spare_) / "uncond", fs::path(repo_) / ".staged", fs::copy_options::recursive);
  for (const std::string& name : {std::string("cond\0junk", 9), std::string(9000, 'A'), std::string(".staged")}) {
    status = Load(*stub, name, &loaded);
    EXPECT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_NE(status.error_message().find("must be 1 to 200 letters, digits"), std::string::npos)
        << status.error_message();
  }
  fs::remove_all(fs::path(repo_) / ".staged");
  EXPECT_EQ(MetricSum(Metrics(*server), "tcm_model_load_failures_total", {}), 0);

  CopyUncondIn();
  status = Load(*stub, "uncond", &loaded);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(loaded.model().name(), "uncond");
  EXPECT_EQ(loaded.model().version(), 1u);
  EXPECT_FALSE(loaded.model().is_default());
  EXPECT_EQ(CheckHealth(server->NewChannel(), "uncond").serving, HealthCheckResponse::SERVING);
  const auto seeded = MakeRequest("uncond", std::nullopt, 2, 2, /*seed=*/41);
  auto first = CallGenerate(*stub, seeded);
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  ASSERT_EQ(first.response.images_size(), 2);
  auto again = CallGenerate(*stub, seeded);
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  std::string metrics = Metrics(*server);
  EXPECT_EQ(MetricOrZero(metrics, "tcm_cache_misses_total", {{"model", "uncond"}}), 2);
  EXPECT_EQ(MetricOrZero(metrics, "tcm_cache_hits_total", {{"model", "uncond"}}), 2);

  // A reload is a new version: same files, same pixels, computed again (the
  // cache is keyed by version).
  status = Load(*stub, "uncond", &loaded);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(loaded.model().version(), 2u);
  EXPECT_EQ(VersionOf(*stub, "uncond"), 2u);
  auto reloaded = CallGenerate(*stub, seeded);
  ASSERT_TRUE(reloaded.status.ok()) << reloaded.status.error_message();
  EXPECT_EQ(CompareImages(first.response, reloaded.response).differing_bytes, 0);
  metrics = Metrics(*server);
  EXPECT_EQ(MetricOrZero(metrics, "tcm_cache_misses_total", {{"model", "uncond"}}), 4);
  EXPECT_EQ(MetricOrZero(metrics, "tcm_cache_hits_total", {{"model", "uncond"}}), 2);
  EXPECT_EQ(MetricSum(metrics, "tcm_model_info", {{"model", "uncond"}}), 1) << "one version in tcm_model_info";

  WaitFor([&] { return server->Log().find("model 'uncond' version 1 finished its last call") != std::string::npos; },
          "version 1 of uncond to be freed");
  status = Unload(*stub, "uncond");
  ASSERT_TRUE(status.ok()) << status.error_message();
  WaitFor([&] { return server->Log().find("model 'uncond' version 2 finished its last call") != std::string::npos; },
          "version 2 of uncond to be freed");
  auto gone = CallGenerate(*stub, seeded);
  EXPECT_EQ(gone.status.error_code(), StatusCode::NOT_FOUND) << gone.status.error_message();
  EXPECT_EQ(VersionOf(*stub, "uncond"), 0u);
  EXPECT_EQ(CheckHealth(server->NewChannel(), "uncond").serving, HealthCheckResponse::NOT_SERVING);
  status = Unload(*stub, "uncond");
  EXPECT_EQ(status.error_code(), StatusCode::NOT_FOUND);
  EXPECT_NE(status.error_message().find("'uncond' is not served"), std::string::npos) << status.error_message();
  metrics = Metrics(*server);
  EXPECT_EQ(MetricSum(metrics, "tcm_model_info", {{"model", "uncond"}}), 0);

  // Loaded again after the unload, it is version 3, not a second version 1:
  // the cache does not answer for it from an earlier load.
  status = Load(*stub, "uncond", &loaded);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(loaded.model().version(), 3u);
  auto after_unload = CallGenerate(*stub, seeded);
  ASSERT_TRUE(after_unload.status.ok()) << after_unload.status.error_message();
  EXPECT_EQ(CompareImages(first.response, after_unload.response).differing_bytes, 0);
  metrics = Metrics(*server);
  EXPECT_EQ(MetricOrZero(metrics, "tcm_cache_misses_total", {{"model", "uncond"}}), 6);
  EXPECT_EQ(MetricOrZero(metrics, "tcm_cache_hits_total", {{"model", "uncond"}}), 2);
  // The default model went on serving throughout.
  auto cond = CallGenerate(*stub, MakeRequest("", 3, 1, 1, 5));
  EXPECT_TRUE(cond.status.ok()) << cond.status.error_message();
  StopCleanly(*server);
}

TEST_F(ModelControlTest, AtMostSixteenCallsWaitForTheControlAndMoreAreRefused) {
  testing::ControlGate gate(dir_.path());
  gate.Close();  // the control's thread takes no call until it opens
  auto server = StartWithCondOnly({"--model_control", "explicit"}, gate.path());
  ASSERT_NE(server, nullptr);
  auto stub = v1::TcmService::NewStub(server->NewChannel());
  constexpr int kCalls = 20;
  std::vector<grpc::Status> statuses(kCalls);
  std::atomic<int> refused{0};
  std::vector<std::thread> callers;
  for (int i = 0; i < kCalls; ++i)
    callers.emplace_back([&, i] {
      statuses[i] = Unload(*stub, "nosuch");
      if (statuses[i].error_code() == StatusCode::RESOURCE_EXHAUSTED) ++refused;
    });
  // 16 calls wait behind the gate, so the other 4 are refused at once.
  WaitFor([&] { return refused.load() == kCalls - 16; }, "4 calls refused");
  gate.Open();
  for (auto& caller : callers) caller.join();
  int waited = 0;
  for (const grpc::Status& status : statuses) {
    if (status.error_code() == StatusCode::RESOURCE_EXHAUSTED) {
      EXPECT_NE(status.error_message().find("(at most 16)"), std::string::npos) << status.error_message();
    } else {
      EXPECT_EQ(status.error_code(), StatusCode::NOT_FOUND) << status.error_message();
      EXPECT_NE(status.error_message().find("'nosuch' is not served"), std::string::npos) << status.error_message();
      ++waited;
    }
  }
  EXPECT_EQ(waited, 16);
  EXPECT_EQ(refused.load(), kCalls - 16);
  // The queue drained: a call now runs.
  v1::LoadModelResponse loaded;
  const grpc::Status reload = Load(*stub, "cond", &loaded);
  ASSERT_TRUE(reload.ok()) << reload.error_message();
  EXPECT_EQ(loaded.model().version(), 2u);
  StopCleanly(*server);
}

TEST_F(ModelControlTest, PollModeAddsReplacesUnderTrafficRefusesABrokenChangeAndRemoves) {
  auto server = StartWithCondOnly({"--model_control", "poll", "--repository_poll_s", "0.1"});
  ASSERT_NE(server, nullptr);
  auto stub = v1::TcmService::NewStub(server->NewChannel());

  // Traffic on "cond" for the whole test: no call may fail.
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::string first_failure;
  std::thread traffic([&] {
    auto own = v1::TcmService::NewStub(server->NewChannel());
    while (!stop) {
      auto result = CallGenerate(*own, MakeRequest("cond", 4, 2, 2, 9), 60);
      if (result.status.ok() && result.response.images_size() == 2) {
        ++ok;
      } else if (failed++ == 0) {
        first_failure = result.status.error_message();
      }
    }
  });

  CopyUncondIn();
  WaitFor([&] { return VersionOf(*stub, "uncond") == 1; }, "uncond to be loaded");
  EXPECT_EQ(CheckHealth(server->NewChannel(), "uncond").serving, HealthCheckResponse::SERVING);
  EXPECT_TRUE(CallGenerate(*stub, MakeRequest("uncond", std::nullopt, 1, 1, 3)).status.ok());

  // Replacing cond's labels makes version 2, while the traffic goes on.
  const int before_replace = ok.load();
  {
    const fs::path labels = fs::path(repo_) / "cond" / "labels.txt";
    {
      std::ofstream out(labels.string() + ".new");
      for (int c = 0; c < 10; ++c) out << "renamed-" << c << "\n";
    }
    fs::rename(labels.string() + ".new", labels);  // whole, as an operator replaces a file
  }
  WaitFor([&] { return VersionOf(*stub, "cond") == 2; }, "cond version 2");
  const v1::ListModelsResponse list = List(*stub);
  for (const auto& m : list.models())
    if (m.name() == "cond") {
      ASSERT_EQ(m.class_names_size(), 10);
      EXPECT_EQ(m.class_names(3), "renamed-3");
      EXPECT_TRUE(m.is_default());
    }
  WaitFor([&] { return ok.load() >= before_replace + 3; }, "calls after the replacement");
  WaitFor([&] { return server->Log().find("model 'cond' version 1 finished its last call") != std::string::npos; },
          "version 1 of cond to be freed");

  // A broken change leaves version 1 of uncond serving and is counted.
  {
    std::ofstream config(fs::path(repo_) / "uncond" / "config.pbtxt", std::ios::app);
    config << "model_channels: 2000000000\n";
  }
  ExpectLoadFailureCounted(*server, "uncond");
  EXPECT_EQ(VersionOf(*stub, "uncond"), 1u);
  EXPECT_TRUE(CallGenerate(*stub, MakeRequest("uncond", std::nullopt, 1, 1, 3)).status.ok());

  // Hostile files: a directory whose config.pbtxt is a FIFO is refused and
  // counted, an entry that is a symbolic link loop skipped; the control
  // thread neither blocks on the FIFO nor dies, and goes on acting on changes.
  fs::create_directories(fs::path(repo_) / "fifo");
  ASSERT_EQ(mkfifo((fs::path(repo_) / "fifo" / "config.pbtxt").c_str(), 0644), 0);
  fs::create_symlink("loop", fs::path(repo_) / "loop");
  ExpectLoadFailureCounted(*server, "fifo");
  EXPECT_NE(server->Log().find("config.pbtxt: not a regular file"), std::string::npos) << server->Log();
  // A directory whose name cannot be a model's (here with a newline) is
  // counted under "invalid", and its name reaches the log escaped.
  const std::string odd = "odd\ntcm-server: forged";
  fs::create_directories(fs::path(repo_) / odd);
  { std::ofstream(fs::path(repo_) / odd / "config.pbtxt") << "garbage {"; }
  ExpectLoadFailureCounted(*server, "invalid");
  EXPECT_NE(server->Log().find("model 'odd\\x0atcm-server: forged' was not loaded"), std::string::npos)
      << server->Log();
  EXPECT_EQ(server->Log().find("\ntcm-server: forged"), std::string::npos) << server->Log();

  // Removing the directory unloads the model.
  fs::remove_all(fs::path(repo_) / "uncond");
  WaitFor([&] { return VersionOf(*stub, "uncond") == 0; }, "uncond to be unloaded");
  EXPECT_EQ(CallGenerate(*stub, MakeRequest("uncond", std::nullopt, 1, 1, 3)).status.error_code(),
            StatusCode::NOT_FOUND);

  stop = true;
  traffic.join();
  EXPECT_EQ(failed.load(), 0) << "first failure: " << first_failure;
  EXPECT_GT(ok.load(), before_replace);
  const std::string metrics = Metrics(*server);
  EXPECT_EQ(MetricOrZero(metrics, "tcm_model_load_failures_total", {{"model", "cond"}}), 0);
  EXPECT_EQ(MetricSum(metrics, "tcm_model_info", {{"model", "cond"}}), 1);
  StopCleanly(*server);
}

// A model folder renamed (mv cond renamed) while its config names the model:
// the new folder is loaded as the model's next version before the old
// folder's version goes, so no call finds the model missing. A second folder
// claiming the name while the first serves it is refused once (not on every
// poll), and takes over, files unchanged, once the first folder goes.
TEST_F(ModelControlTest, PollModeKeepsServingAModelWhoseFolderIsRenamed) {
  auto server = StartWithCondOnly({"--model_control", "poll", "--repository_poll_s", "0.1"});
  ASSERT_NE(server, nullptr);
  auto stub = v1::TcmService::NewStub(server->NewChannel());
  Traffic traffic(*server, "cond");
  WaitFor([&] { return traffic.ok() >= 1; }, "a first call");

  const fs::path repo(repo_);
  fs::rename(repo / "cond", repo / "renamed");
  WaitFor([&] { return VersionOf(*stub, "cond") == 2; }, "cond version 2 from the renamed folder");
  EXPECT_NE(server->Log().find(absl::StrCat("model 'cond' version 2 loaded from ", (repo / "renamed").string(),
                                            " (its folder moved from ", (repo / "cond").string(), ")")),
            std::string::npos)
      << server->Log();
  WaitFor([&] { return server->Log().find("model 'cond' version 1 finished its last call") != std::string::npos; },
          "version 1 of cond to be freed");
  EXPECT_EQ(server->Log().find("model 'cond' version 1 unloaded"), std::string::npos) << "a reload, not an unload";

  // A copy claiming the same name while "renamed" serves it: refused, counted once.
  CopyIn(repo / "renamed", repo / "copy");
  ExpectLoadFailureCounted(*server, "cond");
  EXPECT_NE(server->Log().find(absl::StrCat((repo / "copy").string(), ": a model named 'cond' is already served from ",
                                            (repo / "renamed").string())),
            std::string::npos)
      << server->Log();
  // Later polls (uncond's load is one) do not try the copy again while its files and the name's folder stay.
  // (Polls go through the folders in name order: the one that loads uncond looked at "copy" first.)
  CopyUncondIn();
  WaitFor([&] { return VersionOf(*stub, "uncond") == 1; }, "uncond to be loaded");
  EXPECT_EQ(MetricOrZero(Metrics(*server), "tcm_model_load_failures_total", {{"model", "cond"}}), 1);
  EXPECT_EQ(VersionOf(*stub, "cond"), 2u);

  // The serving folder is renamed again, to a name after the copy's: the renamed folder takes the model
  // over, not the copy that clashed with it (folders in a remembered clash are polled last).
  fs::rename(repo / "renamed", repo / "served");
  WaitFor([&] { return VersionOf(*stub, "cond") == 3; }, "cond version 3 from the folder renamed again");
  EXPECT_NE(server->Log().find(absl::StrCat("model 'cond' version 3 loaded from ", (repo / "served").string())),
            std::string::npos)
      << server->Log();
  EXPECT_EQ(MetricOrZero(Metrics(*server), "tcm_model_load_failures_total", {{"model", "cond"}}), 1);

  // The serving folder goes: the copy takes over as version 4, though none of its files changed.
  fs::rename(repo / "served", repo / ".trash");
  fs::remove_all(repo / ".trash");
  WaitFor([&] { return VersionOf(*stub, "cond") == 4; }, "cond version 4 from the copy");
  EXPECT_NE(server->Log().find(absl::StrCat("model 'cond' version 4 loaded from ", (repo / "copy").string())),
            std::string::npos)
      << server->Log();
  const int before = traffic.ok();
  WaitFor([&] { return traffic.ok() >= before + 2; }, "calls after the takeover");

  traffic.Stop();
  EXPECT_EQ(traffic.failed(), 0) << "first failure: " << traffic.first_failure();
  const std::string metrics = Metrics(*server);
  EXPECT_EQ(MetricOrZero(metrics, "tcm_model_load_failures_total", {{"model", "cond"}}), 1);
  EXPECT_EQ(MetricSum(metrics, "tcm_model_info", {{"model", "cond"}}), 1);
  EXPECT_EQ(CheckHealth(server->NewChannel(), "cond").serving, HealthCheckResponse::SERVING);
  StopCleanly(*server);
}

// A file replaced by one of the same size and modification time (cp -p,
// rsync -a, touch -r) is still a change: by a new file (another inode), or
// rewritten in place (its change time moves).
TEST_F(ModelControlTest, PollModeReloadsAFileReplacedWithTheSameSizeAndModificationTime) {
  auto server = StartWithCondOnly({"--model_control", "poll", "--repository_poll_s", "0.1"});
  ASSERT_NE(server, nullptr);
  auto stub = v1::TcmService::NewStub(server->NewChannel());
  const fs::path labels = fs::path(repo_) / "cond" / "labels.txt";
  const auto size = fs::file_size(labels);
  const auto modified = fs::last_write_time(labels);
  const std::vector<std::string> names = testing::CondClassNames();
  ASSERT_EQ(ClassNamesOf(*stub, "cond"), names);
  auto write_names = [&](const fs::path& path, bool upper) {
    std::ofstream out(path, std::ios::trunc);
    for (std::string name : names) {
      if (upper) std::transform(name.begin(), name.end(), name.begin(), ::toupper);
      out << name << "\n";
    }
  };

  // A new file beside it, given the old one's time, renamed over it (as cp -p or rsync -a do).
  write_names(labels.string() + ".new", /*upper=*/true);
  fs::last_write_time(labels.string() + ".new", modified);
  fs::rename(labels.string() + ".new", labels);
  ASSERT_EQ(fs::file_size(labels), size);
  ASSERT_EQ(fs::last_write_time(labels), modified);
  WaitFor([&] { return VersionOf(*stub, "cond") == 2; }, "cond version 2 after a same-size, same-time replacement");
  std::vector<std::string> served = ClassNamesOf(*stub, "cond");
  ASSERT_EQ(served.size(), names.size());
  EXPECT_EQ(served[0], "AIRPLANE");

  // Rewritten in place, then its time set back (touch -r): same inode, size and time.
  struct stat before;
  ASSERT_EQ(stat(labels.c_str(), &before), 0);
  write_names(labels, /*upper=*/false);
  fs::last_write_time(labels, modified);
  struct stat after;
  ASSERT_EQ(stat(labels.c_str(), &after), 0);
  ASSERT_EQ(after.st_ino, before.st_ino);
  ASSERT_EQ(after.st_size, before.st_size);
  ASSERT_EQ(fs::last_write_time(labels), modified);
  WaitFor([&] { return VersionOf(*stub, "cond") == 3; }, "cond version 3 after an in-place rewrite, time set back");
  EXPECT_EQ(ClassNamesOf(*stub, "cond"), names);
  EXPECT_EQ(MetricOrZero(Metrics(*server), "tcm_model_load_failures_total", {{"model", "cond"}}), 0);
  StopCleanly(*server);
}

// GET /v1/models on --http_port lists the models served now, and a reload
// that lowers a model's priority levels leaves no tcm_queue_depth series of
// the levels gone once the old version is freed.
TEST_F(ModelControlTest, RestModelListAndQueueDepthSeriesFollowLoadsAndUnloads) {
  const int http_port = testing::FreePort();
  auto server = StartWithCondOnly({"--model_control", "explicit", "--http_port", std::to_string(http_port)});
  ASSERT_NE(server, nullptr);
  auto stub = v1::TcmService::NewStub(server->NewChannel());
  auto rest_names = [&] {
    std::vector<std::string> names;
    auto reply = testing::HttpCall(http_port, "GET", "/v1/models", "", 30);
    EXPECT_TRUE(reply.ok()) << reply.status();
    if (!reply.ok()) return names;
    EXPECT_EQ(reply->status, 200) << reply->body;
    std::string body = reply->body;  // the names, in order, from "name":"..." entries
    for (size_t at = body.find("\"name\":\""); at != std::string::npos; at = body.find("\"name\":\"", at + 1)) {
      const size_t start = at + 8;
      names.push_back(body.substr(start, body.find('"', start) - start));
    }
    return names;
  };
  EXPECT_EQ(rest_names(), std::vector<std::string>{"cond"});

  CopyUncondIn();
  v1::LoadModelResponse loaded;
  grpc::Status status = Load(*stub, "uncond", &loaded);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(rest_names(), (std::vector<std::string>{"cond", "uncond"}));
  status = Unload(*stub, "uncond");
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(rest_names(), std::vector<std::string>{"cond"});

  // cond with 3 priority levels, then reloaded with the default 2.
  const fs::path config = fs::path(repo_) / "cond" / "config.pbtxt";
  std::string original;
  {
    std::ifstream in(config);
    original.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  { std::ofstream(config, std::ios::app) << "batching { priority_levels: 3 }\n"; }
  status = Load(*stub, "cond", &loaded);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(MetricValue(Metrics(*server), "tcm_queue_depth", {{"model", "cond"}, {"priority", "3"}}).has_value());
  { std::ofstream(config, std::ios::trunc) << original; }
  status = Load(*stub, "cond", &loaded);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(loaded.model().version(), 3u);
  WaitFor([&] { return server->Log().find("model 'cond' version 2 finished its last call") != std::string::npos; },
          "version 2 of cond to be freed");
  const std::string metrics = Metrics(*server);
  EXPECT_FALSE(MetricValue(metrics, "tcm_queue_depth", {{"model", "cond"}, {"priority", "3"}}).has_value()) << metrics;
  EXPECT_EQ(MetricValue(metrics, "tcm_queue_depth", {{"model", "cond"}, {"priority", "1"}}), 0.0);
  EXPECT_EQ(MetricValue(metrics, "tcm_queue_depth", {{"model", "cond"}, {"priority", "2"}}), 0.0);
  // The unloaded model's queue is gone too; its counters stay.
  EXPECT_EQ(MetricSum(metrics, "tcm_queue_depth", {{"model", "uncond"}}), 0);
  EXPECT_FALSE(MetricValue(metrics, "tcm_queue_depth", {{"model", "uncond"}, {"priority", "1"}}).has_value());
  EXPECT_TRUE(MetricValue(metrics, "tcm_images_accepted_total", {{"model", "uncond"}}).has_value());
  StopCleanly(*server);
}

}  // namespace
}  // namespace tcm
