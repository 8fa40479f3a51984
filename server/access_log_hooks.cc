#include "server/access_log_hooks.h"

#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/status_util.h"

namespace tcm {
namespace {

using grpc::experimental::InterceptionHookPoints;

// One per RPC: notes the peer at the first hook, the status when it is sent,
// and writes the line then (or, for a call that ended without sending one,
// when the call is destroyed, as CANCELLED).
class AccessLogInterceptor : public grpc::experimental::Interceptor {
 public:
  AccessLogInterceptor(grpc::experimental::ServerRpcInfo* info, AccessLog* log) : info_(info), log_(log) {
    record_.time = absl::Now();
    record_.protocol = "grpc";
    record_.method = info->method() == nullptr ? "" : info->method();
  }

  ~AccessLogInterceptor() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!written_) {
      record_.status = "CANCELLED";
      Write();
    }
  }

  // Hooks of one call may run at once on different threads (a cancellation
  // arriving while the status is sent), so the record is kept under mu_.
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (record_.peer.empty() && info_->server_context() != nullptr) record_.peer = info_->server_context()->peer();
      if (!written_ && methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
        record_.status = StatusCodeName(static_cast<absl::StatusCode>(methods->GetSendStatus().error_code()));
        Write();
      }
    }
    methods->Proceed();
  }

 private:
  void Write() {  // under mu_
    written_ = true;
    if (auto summary = log_->Take(AccessLogKey(info_->server_context()))) record_.generation = *std::move(summary);
    record_.total_seconds = absl::ToDoubleSeconds(absl::Now() - record_.time);
    log_->Write(record_);
  }

  grpc::experimental::ServerRpcInfo* const info_;
  AccessLog* const log_;
  std::mutex mu_;
  AccessRecord record_;
  bool written_ = false;
};

class AccessLogInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit AccessLogInterceptorFactory(AccessLog* log) : log_(log) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    return new AccessLogInterceptor(info, log_);
  }

 private:
  AccessLog* const log_;
};

}  // namespace

std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> AccessLogInterceptors(
    AccessLog* log) {
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> factories;
  if (log != nullptr) factories.push_back(std::make_unique<AccessLogInterceptorFactory>(log));
  return factories;
}

HttpServer::CompletionHook HttpAccessLogger(AccessLog* log) {
  return [log](const HttpRequest& request, int status, absl::Time received) {
    AccessRecord record;
    record.time = received;
    record.peer = request.peer;
    record.protocol = "http";
    record.method = request.method;
    record.path = request.path;
    record.status = status > 0 ? absl::StrCat(status) : "closed";  // closed: no answer was sent
    if (auto summary = log->Take(&request)) record.generation = *std::move(summary);
    record.total_seconds = absl::ToDoubleSeconds(absl::Now() - received);
    log->Write(record);
  };
}

}  // namespace tcm
