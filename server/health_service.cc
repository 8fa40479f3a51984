#include "server/health_service.h"

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
  // `known`: the name watched is served (else it is SERVICE_UNKNOWN for good).
  static std::shared_ptr<Watcher> Create(HealthService* service, bool known) {
    std::shared_ptr<Watcher> watcher(new Watcher(service, known));
    watcher->self_ = watcher;
    return watcher;
  }
  bool known() const { return known_; }

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

  Watcher(HealthService* service, bool known) : service_(service), known_(known) {}

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
  const bool known_;
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
  std::vector<std::shared_ptr<Watcher>> open;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [name, status] : status_) status = value;
    open = OpenWatchers();
  }
  // Watchers of unknown names keep SERVICE_UNKNOWN; the others follow.
  for (const auto& w : open)
    if (w->known()) w->Send(value, false);
}

void HealthService::Shutdown() {
  std::lock_guard<std::mutex> order(send_mu_);
  std::vector<std::shared_ptr<Watcher>> open;
  {
    std::lock_guard<std::mutex> lock(mu_);
    shut_down_ = true;
    open = OpenWatchers();
  }
  for (const auto& w : open)
    w->Send(w->known() ? HealthCheckResponse::NOT_SERVING : HealthCheckResponse::SERVICE_UNKNOWN, true);
}

std::vector<std::shared_ptr<HealthService::Watcher>> HealthService::OpenWatchers() {
  std::vector<std::shared_ptr<Watcher>> open;
  for (const auto& [raw, weak] : watchers_)
    if (auto watcher = weak.lock()) open.push_back(std::move(watcher));
  return open;
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* context, const HealthCheckRequest* request,
                                               HealthCheckResponse* response) {
  grpc::Status status;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = status_.find(request->service());
    if (it == status_.end()) {
      status = grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service: '" + request->service() + "'");
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
    // stream; the set of models is fixed, so nothing more comes until shutdown.
    watcher = Watcher::Create(this, it != status_.end());
    watchers_[watcher.get()] = watcher;
    first = watcher->known() ? it->second : HealthCheckResponse::SERVICE_UNKNOWN;
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
