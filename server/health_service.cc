#include "server/health_service.h"

#include "server/status_util.h"

namespace tcm {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// One Watch stream: sends the current status, then each change; while a
// write is in flight only the newest status waits.
//
// The rule for every reactor in this project: nothing that can complete the
// call (Finish(), or StartWrite() where its OnWriteDone can finish) runs while
// a lock of the reactor, or a lock its OnDone() takes, is held. gRPC may run
// OnDone() on another thread before Finish() returns. So each entry point
// decides under `mu_` what to start, releases it, then starts it; and the
// service calls Send() on a watcher it holds a reference to, without its own
// `mu_` (which OnDone takes through Forget).
//
// Lifetime: the watcher owns itself from creation until OnDone(); the service
// holds further references only while it calls Send().
class HealthService::Watcher final : public grpc::ServerWriteReactor<HealthCheckResponse>,
                                     public std::enable_shared_from_this<Watcher> {
 public:
  // Watches `name` ("" = the server).
  static std::shared_ptr<Watcher> Create(HealthService* service, std::string name) {
    std::shared_ptr<Watcher> watcher(new Watcher(service, std::move(name)));
    watcher->self_ = watcher;
    return watcher;
  }
  const std::string& name() const { return name_; }

  // Queues `status` for sending. With `end`, finishes the stream once the
  // newest status is sent.
  void Send(ServingStatus status, bool end) {
    Next next;
    {
      std::lock_guard<std::mutex> lock(mu_);
      latest_ = status;
      ending_ = ending_ || end;
      next = ChooseNext();
    }
    Start(next);
  }

  void OnWriteDone(bool ok) override {
    Next next;
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if (!ok) cancelled_ = true;  // the call has ended on the client's side
      next = ChooseNext();
    }
    Start(next);
  }

  void OnCancel() override {
    Next next;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
      next = ChooseNext();
    }
    Start(next);
  }

  void OnDone() override {
    std::shared_ptr<Watcher> self = std::move(self_);  // may be the last reference
    service_->Forget(this);
  }

 private:
  enum class Next { kNothing, kWrite, kFinishOk, kFinishCancelled };

  Watcher(HealthService* service, std::string name) : service_(service), name_(std::move(name)) {}

  // The next write or finish, if one is due and none is running.
  Next ChooseNext() {
    if (finished_ || writing_) return Next::kNothing;
    if (cancelled_) {
      finished_ = true;
      return Next::kFinishCancelled;
    }
    if (!sent_any_ || latest_ != sent_.status()) {
      sent_any_ = true;
      sent_.set_status(latest_);
      writing_ = true;
      return Next::kWrite;
    }
    if (ending_) {
      finished_ = true;
      return Next::kFinishOk;
    }
    return Next::kNothing;
  }

  // Called without `mu_`; `sent_` is not changed while its write is in flight.
  void Start(Next next) {
    switch (next) {
      case Next::kNothing:
        break;
      case Next::kWrite:
        StartWrite(&sent_);
        break;
      case Next::kFinishOk:
        Finish(grpc::Status::OK);
        break;
      case Next::kFinishCancelled:
        Finish(grpc::Status::CANCELLED);
        break;
    }
  }

  HealthService* const service_;
  const std::string name_;
  std::shared_ptr<Watcher> self_;  // released in OnDone
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

bool HealthService::IsServing(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = status_.find(name);
  return it != status_.end() && it->second == HealthCheckResponse::SERVING;
}

void HealthService::SetServing(bool serving) {
  const ServingStatus value = serving ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
  std::lock_guard<std::mutex> order(send_mu_);
  std::vector<std::pair<std::shared_ptr<Watcher>, ServingStatus>> open;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [name, status] : status_) status = value;
    open = OpenWatchers();
  }
  // Watchers of unknown names keep SERVICE_UNKNOWN; the others follow.
  for (const auto& [w, status] : open) w->Send(status, false);
}

void HealthService::SetModelServing(const std::string& name, bool serving) {
  const ServingStatus value = serving ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
  std::lock_guard<std::mutex> order(send_mu_);
  std::vector<std::pair<std::shared_ptr<Watcher>, ServingStatus>> open;
  {
    std::lock_guard<std::mutex> lock(mu_);
    status_[name] = value;
    open = OpenWatchers();
  }
  for (const auto& [w, status] : open)
    if (w->name() == name) w->Send(status, false);
}

void HealthService::Shutdown() {
  std::lock_guard<std::mutex> order(send_mu_);
  std::vector<std::pair<std::shared_ptr<Watcher>, ServingStatus>> open;
  {
    std::lock_guard<std::mutex> lock(mu_);
    shut_down_ = true;
    open = OpenWatchers();
  }
  for (const auto& [w, status] : open)
    w->Send(status == HealthCheckResponse::SERVICE_UNKNOWN ? status : HealthCheckResponse::NOT_SERVING, true);
}

std::vector<std::pair<std::shared_ptr<HealthService::Watcher>, HealthService::ServingStatus>>
HealthService::OpenWatchers() {
  std::vector<std::pair<std::shared_ptr<Watcher>, ServingStatus>> open;
  for (const auto& [raw, weak] : watchers_) {
    if (auto watcher = weak.lock()) {
      const auto it = status_.find(watcher->name());
      open.emplace_back(std::move(watcher), it == status_.end() ? HealthCheckResponse::SERVICE_UNKNOWN : it->second);
    }
  }
  return open;
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* context, const HealthCheckRequest* request,
                                               HealthCheckResponse* response) {
  grpc::Status status;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = status_.find(request->service());
    if (it == status_.end()) {
      status = ToGrpcStatus(absl::NotFoundError("unknown service: '" + request->service() + "'"));
    } else {
      response->set_status(it->second);
    }
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthService::Watch(grpc::CallbackServerContext*,
                                                                    const HealthCheckRequest* request) {
  std::lock_guard<std::mutex> order(send_mu_);
  std::shared_ptr<Watcher> watcher;
  ServingStatus first;
  bool end;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = status_.find(request->service());
    // An unknown name gets SERVICE_UNKNOWN and, as the protocol asks, an open
    // stream, which follows the name if a model of that name is loaded later.
    watcher = Watcher::Create(this, request->service());
    watchers_[watcher.get()] = watcher;
    first = it != status_.end() ? it->second : HealthCheckResponse::SERVICE_UNKNOWN;
    end = shut_down_;
  }
  watcher->Send(first, end);
  return watcher.get();  // owned by itself until OnDone
}

void HealthService::Forget(Watcher* watcher) {
  std::lock_guard<std::mutex> lock(mu_);
  watchers_.erase(watcher);
}

}  // namespace tcm
