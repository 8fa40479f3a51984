#include "tests/server_fixture.h"

#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"

namespace tcm::testing {

std::unique_ptr<ServerProcess> ServerFixture::StartServer(const TestRepositoryOptions& repo_options,
                                                          const std::vector<std::string>& flags,
                                                          bool wait_until_serving, const BatchGate* gate) {
  const std::string root = absl::StrCat(dir_.path(), "/repo", ++repositories_);
  auto repo = WriteTestModelRepository(root, repo_options);
  if (!repo.ok()) {
    ADD_FAILURE() << "writing the model repository: " << repo.status();
    return nullptr;
  }
  ServerProcess::Options options;
  options.repository = *repo;
  options.extra_flags = flags;
  options.wait_until_serving = wait_until_serving;
  options.log_dir = dir_.path();
  if (gate != nullptr) options.batch_gate_file = gate->path();
  auto server = ServerProcess::Start(options);
  if (!server.ok()) {
    ADD_FAILURE() << "starting tcm-server: " << server.status();
    return nullptr;
  }
  logs_.push_back((*server)->log_path());
  return std::move(*server);
}

std::string ServerFixture::Metrics(const ServerProcess& server) {
  auto text = FetchMetrics(server.metrics_port());
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *text : std::string();
}

void ServerFixture::StopCleanly(ServerProcess& server) {
  auto status = server.Stop(120);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "wait status " << *status;
}

void ServerFixture::TearDown() {
  if (!HasFailure()) return;
  for (const auto& path : logs_) {
    std::ifstream in(path);
    std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (log.size() > 6000) log = "..." + log.substr(log.size() - 6000);
    std::printf("---- %s ----\n%s\n", path.c_str(), log.c_str());
  }
}

}  // namespace tcm::testing
