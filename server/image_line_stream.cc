#include "server/image_line_stream.h"

#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/status_util.h"

namespace tcm {
ImageLineChannel::Wait ImageLineChannel::Next(std::string* line, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(
      absl::Condition(
          +[](ImageLineChannel* c) ABSL_NO_THREAD_SAFETY_ANALYSIS { return !c->lines_.empty() || c->ended_; }, this),
      timeout);
  if (lines_.empty()) return ended_ ? Wait::kEnd : Wait::kNothingYet;
  *line = std::move(lines_.front());
  lines_.pop_front();
  return Wait::kLine;
}

bool ImageLineBody::Next(std::string* piece) {
  const absl::Time quiet_until = absl::Now() + heartbeat_;
  while (true) {
    switch (channel_->Next(piece, absl::Milliseconds(50))) {
      case ImageLineChannel::Wait::kLine:
        return true;
      case ImageLineChannel::Wait::kEnd:
        return false;
      case ImageLineChannel::Wait::kNothingYet:
        break;
    }
    if (caller_gone_ && caller_gone_()) return false;  // the destructor cancels the call
    if (absl::Now() >= quiet_until) {
      *piece = "\n";
      return true;
    }
  }
}

void ImageLineChannel::CancelAndWait() {
  std::shared_ptr<RequestState> state;
  {
    absl::MutexLock lock(&mu_);
    if (ended_) return;
    state = state_.lock();
  }
  if (state) state->Cancel();  // the batcher drops its images; the call then ends CANCELLED
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&ended_));
}

bool ImageLineChannel::EndedWithoutImages(absl::Status* status) {
  absl::MutexLock lock(&mu_);
  if (!ended_ || sent_image_) return false;
  *status = status_;
  return true;
}

void ImageLineSink::OnAccepted(const std::shared_ptr<RequestState>& state) {
  model_ = state->spec().model_name;
  steps_ = state->spec().steps;
  seed_ = state->spec().seed;
  absl::MutexLock lock(&channel_->mu_);
  channel_->state_ = state;
}

void ImageLineSink::Push(const v1::Image& image, bool preview) {
  std::string line = absl::StrCat("{\"index\": ", image.index(), ", \"class\": ", image.class_label(),
                                  ", \"preview\": ", preview ? "true" : "false", ", \"png\": \"",
                                  absl::Base64Escape(image.data()), "\"}\n");
  absl::MutexLock lock(&channel_->mu_);
  channel_->sent_image_ = true;
  channel_->lines_.push_back(std::move(line));
}

void ImageLineSink::OnFinish(const absl::Status& status, const v1::Timings&) {
  std::string line = absl::StrCat("{\"end\": true, \"status\": \"", StatusCodeName(status.code()), "\"");
  if (status.ok()) {
    absl::StrAppend(&line, ", \"model\": ", JsonQuoted(model_), ", \"steps\": ", steps_, ", \"seed\": \"", seed_, "\"");
  } else {
    absl::StrAppend(&line, ", \"error\": ", JsonQuoted(std::string(status.message())));
  }
  line += "}\n";
  {
    absl::MutexLock lock(&channel_->mu_);
    channel_->lines_.push_back(std::move(line));
    channel_->status_ = status;
    channel_->ended_ = true;
  }
  delete this;
}

}  // namespace tcm
