#include "server/metrics.h"

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

void ModelMetrics::Batch(int size, double compute_seconds) {
  batch_size_->Observe(size);
  batch_compute_->Observe(compute_seconds);
}

ServerMetrics::ServerMetrics(const std::vector<ServedModel>& models)
    : registry_(std::make_shared<prometheus::Registry>()) {
  auto& requests = prometheus::BuildCounter()
                       .Name("tcm_requests_total")
                       .Help("Generate and GenerateStream calls by model, steps and gRPC status code.")
                       .Register(*registry_);
  requests_ = &requests;
  auto& latency = prometheus::BuildHistogram()
                      .Name("tcm_request_duration_seconds")
                      .Help("Time from receiving a call to finishing it, by model and steps.")
                      .Register(*registry_);
  auto& images = prometheus::BuildCounter()
                     .Name("tcm_images_generated_total")
                     .Help(
                         "Images handed to their callers, by model and steps: all of an OK Generate call, each "
                         "image a GenerateStream call sent.")
                     .Register(*registry_);
  auto& accepted = prometheus::BuildCounter()
                       .Name("tcm_images_accepted_total")
                       .Help(
                           "Images of calls accepted into the queue; each ends counted once in "
                           "tcm_images_generated_total or tcm_images_dropped_total.")
                       .Register(*registry_);
  auto& dropped = prometheus::BuildCounter()
                      .Name("tcm_images_dropped_total")
                      .Help(
                          "Accepted images not handed to their callers, by model and reason (cancelled, deadline, "
                          "deadline_unmeetable, failed).")
                      .Register(*registry_);
  auto& queue_wait = prometheus::BuildHistogram()
                         .Name("tcm_queue_wait_seconds")
                         .Help("Time an image waited before its first forward pass, by model and priority level.")
                         .Register(*registry_);
  auto& batch_compute = prometheus::BuildHistogram()
                            .Name("tcm_batch_compute_seconds")
                            .Help("Time of one batch: inputs, forward pass and outputs.")
                            .Register(*registry_);
  auto& batch_size = prometheus::BuildHistogram()
                         .Name("tcm_batch_size")
                         .Help("Images per forward pass (first and second steps together).")
                         .Register(*registry_);
  auto& queue_depth = prometheus::BuildGauge()
                          .Name("tcm_queue_depth")
                          .Help("Images waiting in the model's queue (new and returning), by priority level.")
                          .Register(*registry_);
  auto& in_flight = prometheus::BuildGauge()
                        .Name("tcm_requests_in_flight")
                        .Help("Calls received and not yet finished.")
                        .Register(*registry_);
  auto& cancellations = prometheus::BuildCounter()
                            .Name("tcm_client_cancellations_total")
                            .Help(
                                "Calls gRPC cancelled before they finished: the client cancelled, its deadline passed "
                                "or its connection ended.")
                            .Register(*registry_);
  auto& info = prometheus::BuildGauge()
                   .Name("tcm_model_info")
                   .Help("Models served (value 1), with their architecture, shape and precision as labels.")
                   .Register(*registry_);
  auto& cache_hits = prometheus::BuildCounter()
                         .Name("tcm_cache_hits_total")
                         .Help("Images of seeded calls served from the response cache (--cache_mb), by model.")
                         .Register(*registry_);
  auto& cache_misses = prometheus::BuildCounter()
                           .Name("tcm_cache_misses_total")
                           .Help("Images of seeded calls looked up in the response cache and not found, by model.")
                           .Register(*registry_);
  cache_bytes_ = &prometheus::BuildGauge()
                      .Name("tcm_cache_bytes")
                      .Help("Bytes held by the response cache (--cache_mb).")
                      .Register(*registry_)
                      .Add({});
  auto& busy = prometheus::BuildCounter()
                   .Name("tcm_worker_busy_seconds_total")
                   .Help("Seconds each worker spent running batches.")
                   .Register(*registry_);

  for (const auto& m : models) {
    auto metrics = std::make_unique<ModelMetrics>();
    const prometheus::Labels labels = {{"model", m.name}};
    metrics->model_ = m.name;
    metrics->requests_ = &requests;
    metrics->latency_ = &latency;
    metrics->images_ = &images;
    metrics->dropped_ = &dropped;
    metrics->accepted_ = &accepted.Add(labels);
    metrics->queue_wait_.assign(m.priority_levels + 1, nullptr);
    metrics->queue_depth_.assign(m.priority_levels + 1, nullptr);
    for (unsigned level = 1; level <= m.priority_levels; ++level) {
      const prometheus::Labels by_level = {{"model", m.name}, {"priority", std::to_string(level)}};
      metrics->queue_wait_[level] = &queue_wait.Add(by_level, SecondsBuckets());
      metrics->queue_depth_[level] = &queue_depth.Add(by_level);
    }
    metrics->batch_compute_ = &batch_compute.Add(labels, SecondsBuckets());
    metrics->batch_size_ = &batch_size.Add(labels, BatchBuckets());
    metrics->in_flight_ = &in_flight.Add(labels);
    metrics->client_cancellations_ = &cancellations.Add(labels);
    metrics->cache_hits_ = &cache_hits.Add(labels);
    metrics->cache_misses_ = &cache_misses.Add(labels);
    // The series a scraper rates over exist from the start at 0, so that
    // rate() counts a model's first images too.
    for (const char* steps : {"1", "2"}) {
      images.Add({{"model", m.name}, {"steps", steps}});
      requests.Add({{"model", m.name}, {"steps", steps}, {"code", "OK"}});
    }
    info.Add({{"model", m.name},
              {"architecture", m.architecture},
              {"resolution", std::to_string(m.resolution)},
              {"channels", std::to_string(m.channels)},
              {"num_classes", std::to_string(m.num_classes)},
              {"default_steps", std::to_string(m.default_steps)},
              {"precision", m.precision}})
        .Set(1);
    models_.push_back(std::move(metrics));
  }
  busy_ = &busy;
}

}  // namespace tcm
