#include "server/generation_front.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/status_util.h"

namespace tcm {
namespace {

// Passes everything on to `inner` and, before the call's end reaches it,
// leaves the call's summary in the access log: its model, steps and images
// once it was queued, "" and zeros for a call refused before (too many open
// calls, a full queue, draining), as docs/SERVING.md says. Deletes itself at
// the end.
class AnnotatingSink : public ResponseSink {
 public:
  AnnotatingSink(ResponseSink* inner, AccessLog* log, const void* call) : inner_(inner), log_(log), call_(call) {}

  void OnAccepted(const std::shared_ptr<RequestState>& state) override {
    state_ = state.get();  // alive while it calls this sink, OnFinish included
    inner_->OnAccepted(state);
  }
  bool DeliversEachImage() const override { return inner_->DeliversEachImage(); }
  void OnImage(v1::Image image) override { inner_->OnImage(std::move(image)); }
  void OnPreview(v1::Image image) override { inner_->OnPreview(std::move(image)); }
  void OnFinish(const absl::Status& status, const v1::Timings& timings) override {
    if (state_ != nullptr && state_->queued()) {  // set before any image or end of a queued call
      summary_.model = state_->spec().model_name;
      summary_.steps = state_->spec().steps;
      summary_.images = state_->spec().num_images;
    }
    summary_.queue_seconds = timings.queue_seconds();
    summary_.compute_seconds = timings.compute_seconds();
    log_->Annotate(call_, std::move(summary_));
    inner_->OnFinish(status, timings);
    delete this;
  }

 private:
  ResponseSink* const inner_;
  AccessLog* const log_;
  const void* const call_;
  const RequestState* state_ = nullptr;
  GenerationSummary summary_;
};

}  // namespace

GenerationFront::GenerationFront(const Options& options, std::vector<ServedModel> models, GenerationQueue* queue,
                                 ServerMetrics* metrics)
    : options_(options),
      catalog_(options.catalog
                   ? options.catalog
                   : std::make_shared<ModelCatalog>(ModelTable{NumberSlots(std::move(models)), options.default_model})),
      queue_(queue),
      metrics_(metrics),
      seed_source_(std::random_device{}()) {}

uint64_t GenerationFront::FreshSeed() {
  absl::MutexLock lock(&seed_mu_);
  return seed_source_() >> 1;
}

void GenerationFront::CountRejected(const std::string& model, unsigned steps, const absl::Status& status) {
  const std::shared_ptr<const ModelTable> table = models();
  const ServedModel* fallback = table->Default();
  metrics_->RequestRejected(model.empty() && fallback != nullptr ? fallback->name : model, steps,
                            StatusCodeName(status.code()), table->models);
}

void GenerationFront::Start(GenerationSpec spec, ResponseSink* sink, absl::Time start, absl::Time deadline,
                            const void* call) {
  std::unique_ptr<OpenCallSlot> slot = options_.open_calls ? options_.open_calls->TryTake() : nullptr;
  const bool too_many_open = options_.open_calls && !slot;
  if (slot) sink->HoldOpenCallSlot(std::move(slot));  // before anything can finish the call and end its sink
  if (options_.access_log != nullptr && call != nullptr) sink = new AnnotatingSink(sink, options_.access_log, call);
  ModelMetrics* metrics = &metrics_->model(spec.model);
  ResponseCache* cache = options_.cache != nullptr && spec.seeded && spec.cacheable ? options_.cache : nullptr;
  auto state = std::make_shared<RequestState>(std::move(spec), sink, metrics, start, deadline, cache);
  sink->OnAccepted(state);
  if (too_many_open) {
    state->Fail(absl::ResourceExhaustedError(absl::StrCat("the server holds its limit of ", options_.open_calls->max(),
                                                          " open calls (--max_open_calls); retry later")));
    return;
  }
  std::vector<v1::Image> hits;
  std::vector<unsigned> misses;
  // A preview call is not looked up: its previews come from computing the images.
  const bool look_up = cache != nullptr && !state->spec().preview;
  if (look_up) {
    for (unsigned i = 0; i < state->spec().num_images; ++i) {
      if (auto image = cache->Lookup(state->CacheKey(i))) {
        hits.push_back(*std::move(image));
      } else {
        misses.push_back(i);
      }
    }
    state->SetIndicesToCompute(misses);
  }
  // The images to compute first (all or none; none when every image was
  // cached, which a draining server still refuses), then the cached ones.
  if (absl::Status submitted = queue_->Submit(state); !submitted.ok()) {
    state->Fail(submitted);  // finishes the call through `sink`
    return;
  }
  if (look_up) {
    metrics->CacheHits(static_cast<int>(hits.size()));
    metrics->CacheMisses(static_cast<int>(misses.size()));
  }
  for (v1::Image& image : hits) state->ImageFromCache(std::move(image));
}

}  // namespace tcm
