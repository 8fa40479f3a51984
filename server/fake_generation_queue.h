// A GenerationQueue for tests of the service layer: it records the requests
// it is given, and the test finishes them as a worker would. Header-only.
#ifndef TCM_SERVER_FAKE_GENERATION_QUEUE_H_
#define TCM_SERVER_FAKE_GENERATION_QUEUE_H_

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "server/generation_queue.h"
#include "server/request_state.h"

namespace tcm::testing {

// Records the requests it is given; the test finishes them as a worker would.
class FakeGenerationQueue : public GenerationQueue {
 public:
  absl::Status Submit(const std::shared_ptr<RequestState>& request) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!refusal_.ok()) return refusal_;
    request->Queued();
    submitted_.push_back(request);
    changed_.notify_all();
    return absl::OkStatus();
  }

  // Later submissions fail with `status` (OK: accepted again).
  void RefuseWith(absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    refusal_ = std::move(status);
  }

  // The `n`-th request submitted (from 0), waiting for it up to 30 s.
  std::shared_ptr<RequestState> WaitForRequest(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait_for(lock, std::chrono::seconds(30), [&] { return submitted_.size() > n; });
    return submitted_.size() > n ? submitted_[n] : nullptr;
  }

  size_t submitted() {
    std::lock_guard<std::mutex> lock(mu_);
    return submitted_.size();
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  absl::Status refusal_;
  std::vector<std::shared_ptr<RequestState>> submitted_;
};

// Waits (up to 30 s) until `request` is abandoned, as a batcher would see it
// after the call was cancelled, and returns that status (OK if it never was).
inline absl::Status WaitUntilAbandoned(const RequestState& request) {
  absl::Status abandoned;
  for (int i = 0; i < 3000 && abandoned.ok(); ++i) {
    abandoned = request.Abandoned(absl::Now());
    if (abandoned.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return abandoned;
}

}  // namespace tcm::testing

#endif  // TCM_SERVER_FAKE_GENERATION_QUEUE_H_
