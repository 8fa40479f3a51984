#include "server/tcm_service.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/access_log_hooks.h"
#include "server/status_util.h"

namespace tcm {
namespace {

// The rule for every reactor in this project: nothing that can complete the
// call (Finish(), or StartWrite() where its OnWriteDone can finish) runs while
// a lock of the reactor, or a lock its OnDone() takes, is held. gRPC may run
// OnDone(), which deletes the reactor and its mutex, on another thread before
// Finish() returns; a lock guard would then unlock a destroyed mutex.
// Reactors decide under their lock what to start, release it, then start it.

// Generate: collects every image, answers once.
class GenerateReactor : public grpc::ServerUnaryReactor, public ResponseSink {
 public:
  explicit GenerateReactor(v1::GenerateResponse* response) : response_(response) {}

  void OnAccepted(const std::shared_ptr<RequestState>& state) override {
    response_->set_model(state->spec().model_name);
    response_->set_steps(state->spec().steps);
    response_->set_seed(state->spec().seed);
    state_ = state;
  }

  bool DeliversEachImage() const override { return false; }
  void OnImage(v1::Image image) override { *response_->add_images() = std::move(image); }

  void OnFinish(const absl::Status& status, const v1::Timings& timings) override {
    if (status.ok()) {
      auto* images = response_->mutable_images();
      std::sort(images->begin(), images->end(),
                [](const v1::Image& a, const v1::Image& b) { return a.index() < b.index(); });
      *response_->mutable_timings() = timings;
    } else {
      response_->clear_images();
    }
    Finish(ToGrpcStatus(status));
  }

  void OnCancel() override {
    if (auto state = state_.lock()) state->Cancel();
  }
  void OnDone() override { delete this; }

 private:
  v1::GenerateResponse* response_;
  std::weak_ptr<RequestState> state_;
};

// GenerateStream: one message per image as it finishes, one write at a time.
// Each entry point decides under `mu_` what to start next and starts it after
// releasing `mu_` (see the rule at the top of this file).
class StreamReactor : public grpc::ServerWriteReactor<v1::GenerateStreamResponse>, public ResponseSink {
 public:
  void OnAccepted(const std::shared_ptr<RequestState>& state) override {
    absl::MutexLock lock(&mu_);
    model_ = state->spec().model_name;
    steps_ = state->spec().steps;
    state_ = state;
  }

  bool DeliversEachImage() const override { return true; }

  void OnImage(v1::Image image) override { Send(std::move(image), /*preview=*/false); }
  void OnPreview(v1::Image image) override { Send(std::move(image), /*preview=*/true); }

  void OnFinish(const absl::Status& status, const v1::Timings&) override {
    Next next;
    {
      absl::MutexLock lock(&mu_);
      final_ = ToGrpcStatus(status);
      finishing_ = true;
      if (!status.ok()) pending_.clear();
      next = ChooseNext();
    }
    Start(next);
  }

  void OnWriteDone(bool ok) override {
    Next next;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) pending_.clear();  // the client is gone; OnCancel fails the call
      next = ChooseNext();
    }
    Start(next);
  }

  void OnCancel() override {
    std::shared_ptr<RequestState> state;
    {
      absl::MutexLock lock(&mu_);
      state = state_.lock();
    }
    if (state) state->Cancel();
  }
  void OnDone() override { delete this; }

 private:
  enum class Next { kNothing, kWrite, kFinish };

  void Send(v1::Image image, bool preview) {
    Next next;
    {
      absl::MutexLock lock(&mu_);
      v1::GenerateStreamResponse message;
      message.set_model(model_);
      message.set_steps(steps_);
      *message.mutable_image() = std::move(image);
      message.set_preview(preview);
      pending_.push_back(std::move(message));
      next = ChooseNext();
    }
    Start(next);
  }

  // What to start now: the next queued message when no write is in flight,
  // else the finish once the call has its status and nothing is left to write.
  Next ChooseNext() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_) return Next::kNothing;
    if (!pending_.empty()) {
      current_ = std::move(pending_.front());
      pending_.pop_front();
      writing_ = true;
      return Next::kWrite;
    }
    if (finishing_) {
      finished_ = true;
      return Next::kFinish;
    }
    return Next::kNothing;
  }

  // Called without `mu_`. `current_` and `final_` are not changed while a
  // write is in flight or once the finish is chosen. After Finish() the
  // reactor may already be deleted: nothing touches it after the call.
  void Start(Next next) ABSL_LOCKS_EXCLUDED(mu_) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (next == Next::kWrite) {
      StartWrite(&current_);
    } else if (next == Next::kFinish) {
      Finish(final_);
    }
  }

  absl::Mutex mu_;
  std::deque<v1::GenerateStreamResponse> pending_ ABSL_GUARDED_BY(mu_);
  v1::GenerateStreamResponse current_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;  // the call's status is known
  bool finished_ ABSL_GUARDED_BY(mu_) = false;   // Finish() is chosen
  grpc::Status final_ ABSL_GUARDED_BY(mu_);
  std::weak_ptr<RequestState> state_ ABSL_GUARDED_BY(mu_);
  std::string model_ ABSL_GUARDED_BY(mu_);
  unsigned steps_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

TcmServiceImpl::TcmServiceImpl(const Options& options, std::vector<ServedModel> models, GenerationQueue* queue,
                               ServerMetrics* metrics)
    : front_(options, std::move(models), queue, metrics) {}

absl::Status TcmServiceImpl::Start(grpc::CallbackServerContext* context, const v1::GenerateRequest& request,
                                   ResponseSink* sink) {
  const absl::Time start = absl::Now();
  const std::shared_ptr<const ModelTable> table = front_.models();
  auto spec = ValidateRequest(request, table->models, table->default_model, front_.limits(), front_.FreshSeed());
  if (spec.ok()) spec->table = table;
  if (spec.ok() && spec->preview && !sink->DeliversEachImage())
    spec = absl::InvalidArgumentError(
        "preview: only GenerateStream sends previews; Generate answers once with the final images");
  if (!spec.ok()) {
    front_.CountRejected(request.model(), request.steps(), spec.status());
    return spec.status();
  }
  front_.Start(*std::move(spec), sink, start, CallDeadline(*context), AccessLogKey(context));
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* TcmServiceImpl::Generate(grpc::CallbackServerContext* context,
                                                   const v1::GenerateRequest* request, v1::GenerateResponse* response) {
  auto* reactor = new GenerateReactor(response);
  absl::Status status = Start(context, *request, reactor);
  if (!status.ok()) reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

grpc::ServerWriteReactor<v1::GenerateStreamResponse>* TcmServiceImpl::GenerateStream(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  auto* reactor = new StreamReactor();
  absl::Status status = Start(context, *request, reactor);
  if (!status.ok()) reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

grpc::ServerUnaryReactor* TcmServiceImpl::ListModels(grpc::CallbackServerContext* context, const v1::ListModelsRequest*,
                                                     v1::ListModelsResponse* response) {
  *response = ModelList(*front_.models());
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

absl::Status TcmServiceImpl::ModelControlFor(const char* method) const {
  if (control_mode_ == "explicit" && control_ != nullptr) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat(method, ": the server runs with --model_control=", control_mode_,
                   control_mode_ == "poll" ? " (it follows the repository's directories)" : "",
                   "; start it with --model_control=explicit to load and unload models by call"));
}

grpc::ServerUnaryReactor* TcmServiceImpl::LoadModel(grpc::CallbackServerContext* context,
                                                    const v1::LoadModelRequest* request,
                                                    v1::LoadModelResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (absl::Status usable = ModelControlFor("LoadModel"); !usable.ok()) {
    reactor->Finish(ToGrpcStatus(usable));
    return reactor;
  }
  // Answered from the control's thread once the model serves (or failed to load).
  control_->Load(request->name(), [this, reactor, response](absl::StatusOr<ServedModel> loaded) {
    if (loaded.ok()) {
      const std::shared_ptr<const ModelTable> table = front_.models();
      const bool is_default = table->Default() != nullptr && table->Default()->name == loaded->name;
      *response->mutable_model() = ModelInfoOf(*loaded, is_default);
    }
    reactor->Finish(ToGrpcStatus(loaded.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* TcmServiceImpl::UnloadModel(grpc::CallbackServerContext* context,
                                                      const v1::UnloadModelRequest* request, v1::UnloadModelResponse*) {
  auto* reactor = context->DefaultReactor();
  if (absl::Status usable = ModelControlFor("UnloadModel"); !usable.ok()) {
    reactor->Finish(ToGrpcStatus(usable));
    return reactor;
  }
  control_->Unload(request->name(), [reactor](const absl::Status& status) { reactor->Finish(ToGrpcStatus(status)); });
  return reactor;
}

}  // namespace tcm
