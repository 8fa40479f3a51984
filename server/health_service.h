// grpc.health.v1.Health with the statuses the server sets: "" for the server
// as a whole and one name per model. Every name starts NOT_SERVING, so no
// probe can read SERVING before the server says so (gRPC's built-in service
// starts "" at SERVING the moment the port opens). Unknown names: Check
// answers NOT_FOUND, Watch sends SERVICE_UNKNOWN and stays open, as the
// protocol asks.
// Torch-free and thread-safe.
#ifndef TCM_SERVER_HEALTH_SERVICE_H_
#define TCM_SERVER_HEALTH_SERVICE_H_

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"

namespace tcm {

class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

  // Serves "" and `names`, all NOT_SERVING.
  explicit HealthService(const std::vector<std::string>& names);
  ~HealthService() override;

  // Sets every name (the server and each model) to SERVING or NOT_SERVING and
  // tells open Watch streams.
  void SetServing(bool serving);

  // Sets model `name` (added if new) to SERVING or NOT_SERVING and tells
  // its open Watch streams.
  void SetModelServing(const std::string& name, bool serving);

  // Whether `name` ("" = the server) is SERVING; false for an unknown name.
  bool IsServing(const std::string& name);

  // Ends every open Watch stream (after it has sent the latest status) and
  // any opened later, so that none holds the server's shutdown. Statuses stay
  // as they are for Check.
  void Shutdown();

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const grpc::health::v1::HealthCheckRequest* request,
                                  grpc::health::v1::HealthCheckResponse* response) override;
  grpc::ServerWriteReactor<grpc::health::v1::HealthCheckResponse>* Watch(
      grpc::CallbackServerContext* context, const grpc::health::v1::HealthCheckRequest* request) override;

 private:
  class Watcher;
  void Forget(Watcher* watcher);
  // The watchers not yet done, each with the status of its name
  // (SERVICE_UNKNOWN for an unknown one). Requires `mu_`.
  std::vector<std::pair<std::shared_ptr<Watcher>, ServingStatus>> OpenWatchers();

  // Held while a status changes and is sent to the watchers, so that they
  // get changes in order. Taken before `mu_`; no reaction takes it.
  std::mutex send_mu_;
  // Guards the fields below; taken by a Watcher's OnDone (through Forget), so
  // never held while a watcher is told anything.
  std::mutex mu_;
  std::map<std::string, ServingStatus> status_;
  std::map<Watcher*, std::weak_ptr<Watcher>> watchers_;
  bool shut_down_ = false;
};

}  // namespace tcm

#endif  // TCM_SERVER_HEALTH_SERVICE_H_
