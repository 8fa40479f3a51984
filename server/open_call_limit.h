// Bounds the generation calls a server holds at once, from their start until
// their front end lets go of them. A caller that stops reading keeps its call
// open, and with it the images waiting to be sent; the queue's limit does not
// see those (they are done), so without this bound callers that never read
// could hold memory without end. Header-only, thread-safe.
#ifndef TCM_SERVER_OPEN_CALL_LIMIT_H_
#define TCM_SERVER_OPEN_CALL_LIMIT_H_

#include <atomic>
#include <cstdint>
#include <memory>

namespace tcm {

// One call's place under an OpenCallLimit, given back when destroyed.
class OpenCallSlot {
 public:
  explicit OpenCallSlot(std::shared_ptr<std::atomic<int64_t>> open) : open_(std::move(open)) {}
  ~OpenCallSlot() { open_->fetch_sub(1); }
  OpenCallSlot(const OpenCallSlot&) = delete;
  OpenCallSlot& operator=(const OpenCallSlot&) = delete;

 private:
  const std::shared_ptr<std::atomic<int64_t>> open_;  // shared: a slot may outlive its limit
};

class OpenCallLimit {
 public:
  explicit OpenCallLimit(int64_t max) : max_(max) {}

  // A place for one more call, or null when `max` calls hold one already.
  std::unique_ptr<OpenCallSlot> TryTake() {
    int64_t open = open_->load();
    do {  // never past max, even for a moment: a refusal must mean `max` calls are open
      if (open >= max_) return nullptr;
    } while (!open_->compare_exchange_weak(open, open + 1));
    return std::make_unique<OpenCallSlot>(open_);
  }
  int64_t max() const { return max_; }
  int64_t open() const { return open_->load(); }

 private:
  const int64_t max_;
  const std::shared_ptr<std::atomic<int64_t>> open_ = std::make_shared<std::atomic<int64_t>>(0);
};

}  // namespace tcm

#endif  // TCM_SERVER_OPEN_CALL_LIMIT_H_
