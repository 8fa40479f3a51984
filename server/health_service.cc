#include "server/health_service.h"

namespace tcm {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// One Watch stream: sends the current status, then each change; while a
// write is in flight only the newest status waits. Deletes itself when done.
class HealthService::Watcher final : public grpc::ServerWriteReactor<HealthCheckResponse> {
 public:
  // `known`: the name watched is served (else it is SERVICE_UNKNOWN for good).
  Watcher(HealthService* service, bool known) : service_(service), known_(known) {}
  bool known() const { return known_; }

  // Queues `status` for sending. With `end`, finishes the stream once the
  // newest status is sent.
  void Send(ServingStatus status, bool end) {
    std::lock_guard<std::mutex> lock(mu_);
    latest_ = status;
    ending_ = ending_ || end;
    Advance();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) cancelled_ = true;  // the call has ended on the client's side
    Advance();
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    Advance();
  }

  void OnDone() override {
    service_->Forget(this);
    delete this;
  }

 private:
  // Starts the next write or the finish, if one is due and none is running.
  void Advance() {
    if (finished_ || writing_) return;
    if (cancelled_) {
      finished_ = true;
      Finish(grpc::Status::CANCELLED);
    } else if (!sent_any_ || latest_ != sent_.status()) {
      sent_any_ = true;
      sent_.set_status(latest_);
      writing_ = true;
      StartWrite(&sent_);
    } else if (ending_) {
      finished_ = true;
      Finish(grpc::Status::OK);
    }
  }

  HealthService* const service_;
  const bool known_;
  std::mutex mu_;
  ServingStatus latest_ = HealthCheckResponse::UNKNOWN;
  HealthCheckResponse sent_;  // the last status written (or being written)
  bool sent_any_ = false, writing_ = false, ending_ = false, cancelled_ = false, finished_ = false;
};

HealthService::HealthService(const std::vector<std::string>& names) {
  status_[""] = HealthCheckResponse::NOT_SERVING;
  for (const auto& name : names) status_[name] = HealthCheckResponse::NOT_SERVING;
}

HealthService::~HealthService() { Shutdown(); }

void HealthService::SetServing(bool serving) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [name, status] : status_) status = serving ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
  // Watchers of unknown names keep SERVICE_UNKNOWN; the others follow.
  for (Watcher* w : watchers_)
    if (w->known()) w->Send(serving ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING, false);
}

void HealthService::Shutdown() {
  std::lock_guard<std::mutex> lock(mu_);
  shut_down_ = true;
  for (Watcher* w : watchers_)
    w->Send(w->known() ? HealthCheckResponse::NOT_SERVING : HealthCheckResponse::SERVICE_UNKNOWN, true);
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* context, const HealthCheckRequest* request,
                                               HealthCheckResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = status_.find(request->service());
  if (it == status_.end()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service: '" + request->service() + "'"));
  } else {
    response->set_status(it->second);
    reactor->Finish(grpc::Status::OK);
  }
  return reactor;
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthService::Watch(grpc::CallbackServerContext*,
                                                                    const HealthCheckRequest* request) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = status_.find(request->service());
  // An unknown name gets SERVICE_UNKNOWN and, as the protocol asks, an open
  // stream; the set of models is fixed, so nothing more comes until shutdown.
  auto* watcher = new Watcher(this, it != status_.end());
  watchers_.insert(watcher);
  watcher->Send(watcher->known() ? it->second : HealthCheckResponse::SERVICE_UNKNOWN, shut_down_);
  return watcher;
}

void HealthService::Forget(Watcher* watcher) {
  std::lock_guard<std::mutex> lock(mu_);
  watchers_.erase(watcher);
}

}  // namespace tcm
