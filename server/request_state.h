// The shared state of one Generate / GenerateStream call while its images
// are in flight: what was asked, the images done so far, and the single
// final status. Torch-free.
#ifndef TCM_SERVER_REQUEST_STATE_H_
#define TCM_SERVER_REQUEST_STATE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/metrics.h"
#include "server/open_call_limit.h"
#include "server/response_cache.h"
#include "tcm/v1/tcm_service.pb.h"

namespace tcm {

// A validated request.
struct GenerationSpec {
  int model = 0;  // the served version's index in the batcher and the metrics (ServedModel::slot)
  std::string model_name;
  unsigned model_version = 1;  // ServedModel::version: part of the response cache's key
  bool cacheable = false;      // the model's config lets its images be cached
  unsigned steps = 1;
  unsigned num_images = 1;
  uint64_t seed = 0;
  std::vector<int64_t> class_labels;  // one per image; -1 = unconditional
  v1::ImageFormat format = v1::IMAGE_FORMAT_PNG;
  unsigned priority = 1;  // the batcher's level: 1 (highest) ..the model's priority_levels
  bool preview = false;   // send each 2-step image's first-step result too (streams only)
  bool seeded = false;    // the request named its seed (only such images are cached)
  // The models table the spec was validated against, held for the call's
  // life: a model version stays listed (and takes work) while a call that
  // chose it may still submit to it (see ModelControl).
  std::shared_ptr<const ModelTable> table;
};

// Where a call's results go; implemented by the RPC reactors. RequestState
// serialises the calls: OnImage for each finished image (completion order),
// then OnFinish exactly once. Nothing is called after OnFinish.
class RequestState;
class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  // The call was accepted as `state` (before any image is queued).
  virtual void OnAccepted(const std::shared_ptr<RequestState>& state) = 0;
  // True when each image reaches the caller as OnImage hands it over (a
  // stream); false when the images are returned together on success.
  virtual bool DeliversEachImage() const = 0;
  virtual void OnImage(v1::Image image) = 0;
  // The first-step result of an image of a 2-step call that asked for
  // previews, before that image's OnImage. Not part of the image ledger.
  virtual void OnPreview(v1::Image) {}
  virtual void OnFinish(const absl::Status& status, const v1::Timings& timings) = 0;

  // The call's place under the server's open-call limit, held until this
  // sink (the front end's own object for the call) is destroyed.
  void HoldOpenCallSlot(std::unique_ptr<OpenCallSlot> slot) { open_call_slot_ = std::move(slot); }

 private:
  std::unique_ptr<OpenCallSlot> open_call_slot_;
};

class RequestState {
 public:
  // `sink` and `metrics` must outlive the call's OnFinish. With `cache`, the
  // images this call computes are cached (see CacheKey).
  RequestState(GenerationSpec spec, ResponseSink* sink, ModelMetrics* metrics, absl::Time start, absl::Time deadline,
               ResponseCache* cache = nullptr);

  const GenerationSpec& spec() const { return spec_; }

  // The images to compute: every index unless the call found some in the
  // cache (set before the call is queued).
  const std::vector<unsigned>& indices_to_compute() const { return to_compute_; }
  void SetIndicesToCompute(std::vector<unsigned> indices) { to_compute_ = std::move(indices); }
  // What image `index` of this call is cached under.
  ImageKey CacheKey(unsigned index) const;
  // When the call stops wanting its images (absl::InfiniteFuture() = never).
  absl::Time deadline() const { return deadline_; }

  // The call's images are queued: counts them in tcm_images_accepted_total.
  // From then on each image is counted once more, as generated or dropped.
  void Queued();
  // Whether Queued() was called: the call was accepted into the queue (a
  // refused call never is).
  bool queued() const { return queued_.load(); }

  // OK while the call still wants its images; else why not (cancelled by the
  // client, deadline passed, or the call already ended with that code).
  absl::Status Abandoned(absl::Time now) const;

  // gRPC cancelled the call: the client cancelled, its deadline passed or it
  // went away (counted once in tcm_client_cancellations_total).
  void Cancel();

  // Image `index` is done: `pixels` is height x width x channels uint8.
  // Encodes it, hands it to the sink, and finishes the call after the last.
  void ImageDone(unsigned index, const uint8_t* pixels, int width, int height, int channels);

  // An image of the call found in the cache, encoded as asked: handed to the
  // sink like a computed one (counted as generated).
  void ImageFromCache(v1::Image image);

  // Image `index` finished its first step of two: when the call asked for
  // previews, encodes that result and hands it to the sink (OnPreview).
  void PreviewDone(unsigned index, const uint8_t* pixels, int width, int height, int channels);

  // One image will not be computed (it was removed from the queue, or its
  // batch failed): counts it as dropped and fails the call with `why`. The
  // tcm_images_dropped_total reason is `reason`, or when empty follows
  // why's code ("cancelled", "deadline", "failed").
  void DropImage(const absl::Status& why, const std::string& reason = "");

  // Fails the call (first failure wins); later images are discarded and
  // counted as dropped. For a call whose images were never queued.
  void Fail(const absl::Status& status);

  // Timing contributions, in seconds.
  void AddQueueWait(double seconds);
  void AddCompute(double seconds);

 private:
  void Finish(const absl::Status& status);  // with mu_ held
  // Image `index` as the call asked for it (PNG or RAW); adds the encoding
  // time to `encode_seconds`.
  absl::StatusOr<v1::Image> Encode(unsigned index, const uint8_t* pixels, int width, int height, int channels,
                                   double* encode_seconds) const;
  // Hands a finished image to the sink and finishes the call after the last.
  void Deliver(v1::Image image, double encode_seconds);
  // Counts an image finished after its call ended as dropped, for the call's reason.
  void DropFinishedLate();

  const GenerationSpec spec_;
  ResponseSink* const sink_;
  ModelMetrics* const metrics_;
  const absl::Time start_;
  const absl::Time deadline_;
  ResponseCache* const cache_;
  std::vector<unsigned> to_compute_;
  std::atomic<bool> queued_{false};
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> finished_{false};
  std::atomic<int> final_code_{0};  // absl::StatusCode, set before finished_

  // A std::mutex, not an absl::Mutex: ThreadSanitizer sees its locking
  // (Debian's Abseil is not instrumented), so request_state_test checks the
  // ledger's concurrency under it.
  std::mutex mu_;
  unsigned done_ = 0;    // guarded by mu_
  v1::Timings timings_;  // guarded by mu_
};

}  // namespace tcm

#endif  // TCM_SERVER_REQUEST_STATE_H_
