#include "server/metrics.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace tcm {
namespace {

using prometheus::Histogram;

Histogram::BucketBoundaries SecondsBuckets() {
  return {0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60};
}

Histogram::BucketBoundaries BatchBuckets() { return {1, 2, 4, 8, 16, 32, 64, 128, 256}; }

}  // namespace

void ModelMetrics::RequestFinished(unsigned steps, const std::string& code, double seconds) {
  const std::string s = std::to_string(steps);
  requests_->Add({{"model", model_}, {"steps", s}, {"code", code}}).Increment();
  latency_->Add({{"model", model_}, {"steps", s}}, SecondsBuckets()).Observe(seconds);
}

void ModelMetrics::ImagesGenerated(unsigned steps, int count) {
  images_->Add({{"model", model_}, {"steps", std::to_string(steps)}}).Increment(count);
}

void ModelMetrics::ImagesDropped(const std::string& reason, int count) {
  dropped_->Add({{"model", model_}, {"reason", reason}}).Increment(count);
}

void ModelMetrics::SetQueueDepth(int level, size_t depth) {
  QueueDepths& d = *queue_depths_;
  std::lock_guard<std::mutex> lock(d.mu);
  const auto own = d.by_slot.find(slot_);
  if (own == d.by_slot.end() || level < 1 || static_cast<size_t>(level) >= own->second.size()) return;  // freed
  own->second[level] = depth;
  size_t sum = 0;
  for (const auto& [slot, depths] : d.by_slot)
    if (static_cast<size_t>(level) < depths.size()) sum += depths[level];
  d.gauges.at(level)->Set(static_cast<double>(sum));
}

void ModelMetrics::Batch(int size, double compute_seconds) {
  batch_size_->Observe(size);
  batch_compute_->Observe(compute_seconds);
}

ServerMetrics::ServerMetrics(const std::vector<ServedModel>& models)
    : registry_(std::make_shared<prometheus::Registry>()) {
  requests_ = &prometheus::BuildCounter()
                   .Name("tcm_requests_total")
                   .Help("Generate and GenerateStream calls by model, steps and gRPC status code.")
                   .Register(*registry_);
  latency_ = &prometheus::BuildHistogram()
                  .Name("tcm_request_duration_seconds")
                  .Help("Time from receiving a call to finishing it, by model and steps.")
                  .Register(*registry_);
  images_ = &prometheus::BuildCounter()
                 .Name("tcm_images_generated_total")
                 .Help(
                     "Images handed to their callers, by model and steps: all of an OK Generate call, each "
                     "image a GenerateStream call sent.")
                 .Register(*registry_);
  accepted_ = &prometheus::BuildCounter()
                   .Name("tcm_images_accepted_total")
                   .Help(
                       "Images of calls accepted into the queue; each ends counted once in "
                       "tcm_images_generated_total or tcm_images_dropped_total.")
                   .Register(*registry_);
  dropped_ = &prometheus::BuildCounter()
                  .Name("tcm_images_dropped_total")
                  .Help(
                      "Accepted images not handed to their callers, by model and reason (cancelled, deadline, "
                      "deadline_unmeetable, failed, shutdown).")
                  .Register(*registry_);
  queue_wait_ = &prometheus::BuildHistogram()
                     .Name("tcm_queue_wait_seconds")
                     .Help("Time an image waited before its first forward pass, by model and priority level.")
                     .Register(*registry_);
  batch_compute_ = &prometheus::BuildHistogram()
                        .Name("tcm_batch_compute_seconds")
                        .Help("Time of one batch: inputs, forward pass and outputs.")
                        .Register(*registry_);
  batch_size_ = &prometheus::BuildHistogram()
                     .Name("tcm_batch_size")
                     .Help("Images per forward pass (first and second steps together).")
                     .Register(*registry_);
  queue_depth_ = &prometheus::BuildGauge()
                      .Name("tcm_queue_depth")
                      .Help("Images waiting in the model's queue (new and returning), by priority level.")
                      .Register(*registry_);
  in_flight_ = &prometheus::BuildGauge()
                    .Name("tcm_requests_in_flight")
                    .Help("Calls received and not yet finished.")
                    .Register(*registry_);
  cancellations_ = &prometheus::BuildCounter()
                        .Name("tcm_client_cancellations_total")
                        .Help(
                            "Calls gRPC cancelled before they finished: the client cancelled, its deadline passed "
                            "or its connection ended.")
                        .Register(*registry_);
  info_ = &prometheus::BuildGauge()
               .Name("tcm_model_info")
               .Help("Models served (value 1), with their architecture, shape and precision as labels.")
               .Register(*registry_);
  cache_hits_ = &prometheus::BuildCounter()
                     .Name("tcm_cache_hits_total")
                     .Help("Images of seeded calls served from the response cache (--cache_mb), by model.")
                     .Register(*registry_);
  cache_misses_ = &prometheus::BuildCounter()
                       .Name("tcm_cache_misses_total")
                       .Help("Images of seeded calls looked up in the response cache and not found, by model.")
                       .Register(*registry_);
  cache_bytes_ = &prometheus::BuildGauge()
                      .Name("tcm_cache_bytes")
                      .Help("Bytes held by the response cache (--cache_mb).")
                      .Register(*registry_)
                      .Add({});
  busy_ = &prometheus::BuildCounter()
               .Name("tcm_worker_busy_seconds_total")
               .Help("Seconds each worker spent running batches.")
               .Register(*registry_);

  load_failures_ = &prometheus::BuildCounter()
                        .Name("tcm_model_load_failures_total")
                        .Help(
                            "Model directories that failed to load or reload while serving (--model_control), by "
                            "model; the version serving before, if any, went on.")
                        .Register(*registry_);
  for (size_t i = 0; i < models.size(); ++i) {
    ServedModel at = models[i];
    at.slot = static_cast<int>(i);
    AddModel(at);
    ShowModelInfo(at.slot);
  }
}

void ServerMetrics::AddModel(const ServedModel& m) {
  auto metrics = std::make_unique<ModelMetrics>();
  const prometheus::Labels labels = {{"model", m.name}};
  metrics->model_ = m.name;
  metrics->requests_ = requests_;
  metrics->latency_ = latency_;
  metrics->images_ = images_;
  metrics->dropped_ = dropped_;
  metrics->accepted_ = &accepted_->Add(labels);
  metrics->queue_wait_.assign(m.priority_levels + 1, nullptr);
  for (unsigned level = 1; level <= m.priority_levels; ++level) {
    const prometheus::Labels by_level = {{"model", m.name}, {"priority", std::to_string(level)}};
    metrics->queue_wait_[level] = &queue_wait_->Add(by_level, SecondsBuckets());
  }
  metrics->slot_ = m.slot;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::shared_ptr<QueueDepths>& shared = depths_[m.name];
    if (shared == nullptr) shared = std::make_shared<QueueDepths>();
    metrics->queue_depths_ = shared;
  }
  {
    QueueDepths& d = *metrics->queue_depths_;
    std::lock_guard<std::mutex> lock(d.mu);
    d.by_slot[m.slot].assign(m.priority_levels + 1, 0);
    if (d.gauges.size() < m.priority_levels + 1) d.gauges.resize(m.priority_levels + 1, nullptr);
    for (unsigned level = 1; level <= m.priority_levels; ++level)
      if (d.gauges[level] == nullptr)
        d.gauges[level] = &queue_depth_->Add({{"model", m.name}, {"priority", std::to_string(level)}});
  }
  metrics->batch_compute_ = &batch_compute_->Add(labels, SecondsBuckets());
  metrics->batch_size_ = &batch_size_->Add(labels, BatchBuckets());
  metrics->in_flight_ = &in_flight_->Add(labels);
  metrics->client_cancellations_ = &cancellations_->Add(labels);
  metrics->cache_hits_ = &cache_hits_->Add(labels);
  metrics->cache_misses_ = &cache_misses_->Add(labels);
  // The series a scraper rates over exist from the start at 0, so that
  // rate() counts a model's first images too.
  for (const char* steps : {"1", "2"}) {
    images_->Add({{"model", m.name}, {"steps", steps}});
    requests_->Add({{"model", m.name}, {"steps", steps}, {"code", "OK"}});
  }
  load_failures_->Add(labels);
  metrics->info_labels_ = {{"model", m.name},
                           {"architecture", m.architecture},
                           {"resolution", std::to_string(m.resolution)},
                           {"channels", std::to_string(m.channels)},
                           {"num_classes", std::to_string(m.num_classes)},
                           {"default_steps", std::to_string(m.default_steps)},
                           {"precision", m.precision}};
  std::lock_guard<std::mutex> lock(mu_);
  if (models_.size() <= static_cast<size_t>(m.slot)) models_.resize(m.slot + 1);
  models_[m.slot] = std::move(metrics);
}

ModelMetrics& ServerMetrics::model(int index) {
  std::lock_guard<std::mutex> lock(mu_);
  ModelMetrics* metrics = models_.at(index).get();
  if (metrics == nullptr) throw std::out_of_range("ServerMetrics::model: no metrics at index " + std::to_string(index));
  return *metrics;
}

void ServerMetrics::ShowModelInfo(int index) {
  ModelMetrics& m = model(index);
  std::lock_guard<std::mutex> lock(mu_);
  m.info_ = &info_->Add(m.info_labels_);
  m.info_->Set(1);
}

void ServerMetrics::HideModelInfo(int index) {
  ModelMetrics& m = model(index);
  std::lock_guard<std::mutex> lock(mu_);
  if (m.info_ != nullptr) info_->Remove(m.info_);
  m.info_ = nullptr;
}

void ServerMetrics::QueueFreed(int index) {
  QueueDepths& d = *model(index).queue_depths_;
  std::lock_guard<std::mutex> lock(d.mu);
  if (d.by_slot.erase(index) == 0) return;
  size_t levels = 0;  // the most any remaining version has
  for (const auto& [slot, depths] : d.by_slot) levels = std::max(levels, depths.size() - 1);
  for (size_t level = 1; level < d.gauges.size(); ++level) {
    if (d.gauges[level] == nullptr) continue;
    if (level > levels) {
      queue_depth_->Remove(d.gauges[level]);
      d.gauges[level] = nullptr;
      continue;
    }
    size_t sum = 0;
    for (const auto& [slot, depths] : d.by_slot)
      if (level < depths.size()) sum += depths[level];
    d.gauges[level]->Set(static_cast<double>(sum));
  }
  d.gauges.resize(levels + 1);
}

void ServerMetrics::ModelLoadFailed(const std::string& name) { load_failures_->Add({{"model", name}}).Increment(); }

}  // namespace tcm
