// A GoogleTest fixture for tests that run real tcm-server child processes:
// each gets a fresh model repository (see WriteTestModelRepository) in the
// fixture's own temp dir, and a failing test prints the servers' logs.
#ifndef TCM_TESTS_SERVER_FIXTURE_H_
#define TCM_TESTS_SERVER_FIXTURE_H_

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/server_test_util.h"

namespace tcm::testing {

class ServerFixture : public ::testing::Test {
 protected:
  // Writes a fresh model repository and starts a server on it; null (with a
  // test failure) when that fails. With `gate`, the server's batches wait
  // while it is closed. The server runs its default --precision (auto) unless
  // `flags` names one.
  std::unique_ptr<ServerProcess> StartServer(const TestRepositoryOptions& repo_options,
                                             const std::vector<std::string>& flags, bool wait_until_serving = true,
                                             const BatchGate* gate = nullptr);

  // The server's /metrics text (empty, with a test failure, when unreadable).
  std::string Metrics(const ServerProcess& server);

  // SIGTERM, then the exit status must be 0.
  void StopCleanly(ServerProcess& server);

  void TearDown() override;

  TempDir dir_;
  int repositories_ = 0;
  std::vector<std::string> logs_;
};

}  // namespace tcm::testing

#endif  // TCM_TESTS_SERVER_FIXTURE_H_
