// A generation call's images as an HTTP body of JSON lines (application/x-ndjson),
// each sent as soon as the call has it, for pages that show images as they
// are generated:
//   {"index": 2, "class": 7, "preview": true, "png": "<base64>"}    a 2-step image's first step
//   {"index": 2, "class": 7, "preview": false, "png": "<base64>"}   an image's final result
// ("class" -1: an unconditional model)
//   {"end": true, "status": "OK", "model": "...", "steps": 2, "seed": "7"}
// The last line ends every body; a failed call's has the status code's name
// and "error". Empty lines (heartbeats) may come between. The seed is a string, as proto3's JSON writes 64-bit integers
// (exact in JavaScript). The images come in completion order. Torch-free.
#ifndef TCM_SERVER_IMAGE_LINE_STREAM_H_
#define TCM_SERVER_IMAGE_LINE_STREAM_H_

#include <deque>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/http_server.h"
#include "server/request_state.h"

namespace tcm {

// The lines between the call (ImageLineSink) and the connection (ImageLineBody).
class ImageLineChannel {
 public:
  enum class Wait { kLine, kEnd, kNothingYet };
  // Waits up to `timeout` for the next line (kLine, in `line`) or the end.
  Wait Next(std::string* line, absl::Duration timeout);
  // Asks the call to stop (its caller went away) and waits for its end.
  void CancelAndWait();
  // True, with the call's status, when the call has ended without an image
  // (a refused submission ends it inside GenerationFront::Start).
  bool EndedWithoutImages(absl::Status* status);

 private:
  friend class ImageLineSink;
  absl::Mutex mu_;
  std::deque<std::string> lines_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool sent_image_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  std::weak_ptr<RequestState> state_ ABSL_GUARDED_BY(mu_);
};

// The call's ResponseSink: images arrive as lines on `channel`. Deletes
// itself at OnFinish; create with new.
class ImageLineSink : public ResponseSink {
 public:
  explicit ImageLineSink(std::shared_ptr<ImageLineChannel> channel) : channel_(std::move(channel)) {}

  void OnAccepted(const std::shared_ptr<RequestState>& state) override;
  bool DeliversEachImage() const override { return true; }
  void OnImage(v1::Image image) override { Push(image, /*preview=*/false); }
  void OnPreview(v1::Image image) override { Push(image, /*preview=*/true); }
  void OnFinish(const absl::Status& status, const v1::Timings& timings) override;

 private:
  void Push(const v1::Image& image, bool preview);

  const std::shared_ptr<ImageLineChannel> channel_;
  std::string model_;
  unsigned steps_ = 0;
  uint64_t seed_ = 0;
};

// The connection's side: the body of the response. While it waits for a
// line it looks every 50 ms whether the caller is gone (`caller_gone`, may be
// empty), and then ends the body; after `heartbeat` without a line it sends
// an empty line, which readers skip, so that no proxy or idle timeout takes
// a slow call for a dead one. Destroyed before the call has ended, it cancels
// the call and waits for its end, so that the call never outlives its request.
class ImageLineBody : public HttpBodyStream {
 public:
  ImageLineBody(std::shared_ptr<ImageLineChannel> channel, std::function<bool()> caller_gone,
                absl::Duration heartbeat = absl::Seconds(10))
      : channel_(std::move(channel)), caller_gone_(std::move(caller_gone)), heartbeat_(heartbeat) {}
  ~ImageLineBody() override { channel_->CancelAndWait(); }
  bool Next(std::string* piece) override;

 private:
  const std::shared_ptr<ImageLineChannel> channel_;
  const std::function<bool()> caller_gone_;
  const absl::Duration heartbeat_;
};

}  // namespace tcm

#endif  // TCM_SERVER_IMAGE_LINE_STREAM_H_
