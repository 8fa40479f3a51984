#include "server/request_state.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/png_encoder.h"
#include "server/status_util.h"

namespace tcm {

RequestState::RequestState(GenerationSpec spec, ResponseSink* sink, ModelMetrics* metrics, absl::Time start,
                           absl::Time deadline, ResponseCache* cache)
    : spec_(std::move(spec)), sink_(sink), metrics_(metrics), start_(start), deadline_(deadline), cache_(cache) {
  for (unsigned i = 0; i < spec_.num_images; ++i) to_compute_.push_back(i);
  metrics_->RequestStarted();
}

ImageKey RequestState::CacheKey(unsigned index) const {
  return ImageKey{spec_.model_name,
                  spec_.model_version,
                  spec_.class_labels.at(index),
                  spec_.steps,
                  spec_.seed,
                  index,
                  static_cast<int>(spec_.format)};
}

void RequestState::ImageFromCache(v1::Image image) { Deliver(std::move(image), 0); }

namespace {

// The tcm_images_dropped_total reason for an image of a call that ended with `code`.
const char* DropReason(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kCancelled:
      return "cancelled";
    case absl::StatusCode::kDeadlineExceeded:
      return "deadline";
    default:
      return "failed";
  }
}

}  // namespace

void RequestState::DropFinishedLate() {
  metrics_->ImagesDropped(DropReason(static_cast<absl::StatusCode>(final_code_.load())), 1);
}

void RequestState::Queued() {
  queued_ = true;
  metrics_->ImagesAccepted(static_cast<int>(spec_.num_images));
}

absl::Status RequestState::Abandoned(absl::Time now) const {
  if (finished_) {
    return absl::Status(static_cast<absl::StatusCode>(final_code_.load()), "the call already ended");
  }
  // The deadline first: gRPC also cancels a call whose deadline passed.
  if (now >= deadline_) return absl::DeadlineExceededError("the call's deadline passed while it was queued");
  if (cancelled_) return absl::CancelledError("the client cancelled the call");
  return absl::OkStatus();
}

void RequestState::Cancel() {
  if (!cancelled_.exchange(true)) metrics_->ClientCancelled();
}

void RequestState::AddQueueWait(double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  timings_.set_queue_seconds(std::max(timings_.queue_seconds(), seconds));
}

void RequestState::AddCompute(double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  timings_.set_compute_seconds(timings_.compute_seconds() + seconds);
}

absl::StatusOr<v1::Image> RequestState::Encode(unsigned index, const uint8_t* pixels, int width, int height,
                                               int channels, double* encode_seconds) const {
  const absl::Time encode_start = absl::Now();
  v1::Image image;
  if (spec_.format == v1::IMAGE_FORMAT_RAW) {
    image.set_data(reinterpret_cast<const char*>(pixels), static_cast<size_t>(width) * height * channels);
  } else {
    auto png = EncodePng(pixels, width, height, channels);
    if (!png.ok()) return absl::InternalError(absl::StrCat("image ", index, ": ", png.status().message()));
    image.set_data(std::move(*png));
  }
  image.set_width(width);
  image.set_height(height);
  image.set_channels(channels);
  image.set_class_label(spec_.class_labels.at(index));
  image.set_seed(spec_.seed);
  image.set_index(index);
  image.set_format(spec_.format);
  *encode_seconds += absl::ToDoubleSeconds(absl::Now() - encode_start);
  return image;
}

void RequestState::PreviewDone(unsigned index, const uint8_t* pixels, int width, int height, int channels) {
  if (!spec_.preview || finished_) return;
  double encode_seconds = 0;
  auto image = Encode(index, pixels, width, height, channels, &encode_seconds);
  if (!image.ok()) {
    Fail(image.status());
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  timings_.set_encode_seconds(timings_.encode_seconds() + encode_seconds);
  sink_->OnPreview(*std::move(image));
}

void RequestState::ImageDone(unsigned index, const uint8_t* pixels, int width, int height, int channels) {
  if (finished_) {
    DropFinishedLate();
    return;
  }
  double encode_seconds = 0;
  auto image = Encode(index, pixels, width, height, channels, &encode_seconds);
  if (!image.ok()) {
    DropImage(image.status());  // counted as dropped ("failed"); fails the call
    return;
  }
  if (cache_ != nullptr) cache_->Insert(CacheKey(index), *image);
  Deliver(*std::move(image), encode_seconds);
}

void RequestState::Deliver(v1::Image image, double encode_seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) {
    DropFinishedLate();
    return;
  }
  timings_.set_encode_seconds(timings_.encode_seconds() + encode_seconds);
  sink_->OnImage(std::move(image));
  ++done_;
  if (sink_->DeliversEachImage()) metrics_->ImagesGenerated(spec_.steps, 1);
  if (done_ == spec_.num_images) Finish(absl::OkStatus());
}

void RequestState::DropImage(const absl::Status& why, const std::string& reason) {
  metrics_->ImagesDropped(reason.empty() ? DropReason(why.code()) : reason, 1);
  Fail(why);
}

void RequestState::Fail(const absl::Status& status) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!finished_) Finish(status);
}

void RequestState::Finish(const absl::Status& status) {
  final_code_ = static_cast<int>(status.code());
  finished_ = true;
  if (!sink_->DeliversEachImage()) {  // the images held for the answer are returned now, or never
    if (status.ok()) {
      metrics_->ImagesGenerated(spec_.steps, static_cast<int>(done_));
    } else if (done_ > 0) {
      metrics_->ImagesDropped(DropReason(status.code()), static_cast<int>(done_));
    }
  }
  const double total = absl::ToDoubleSeconds(absl::Now() - start_);
  timings_.set_total_seconds(total);
  metrics_->RequestFinished(spec_.steps, StatusCodeName(status.code()), total);
  metrics_->RequestEnded();
  sink_->OnFinish(status, timings_);
}

}  // namespace tcm
