#include "client/mixed_traffic.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/load_core.h"
#include "client/response_check.h"
#include "common/splitmix.h"

namespace tcm::traffic {
namespace {

// Successive draws from one call's own generator.
class Draws {
 public:
  explicit Draws(uint64_t state) : state_(state) {}
  uint64_t Bits() { return SplitMix64(state_++ * kSplitMixGamma); }
  double Unit() { return static_cast<double>(Bits() >> 11) * 0x1.0p-53; }
  int Between(int lo, int hi) { return lo + static_cast<int>(Bits() % static_cast<uint64_t>(hi - lo + 1)); }

 private:
  uint64_t state_;
};

// A malformed version of `request`, and the code the server must answer with.
grpc::StatusCode MakeBad(Draws& draws, const TrafficOptions& options, v1::GenerateRequest* request) {
  switch (draws.Between(0, options.num_classes > 0 ? 4 : 3)) {
    case 0:
      request->set_model(options.model + "-not-served");
      return grpc::StatusCode::NOT_FOUND;
    case 1:
      request->set_steps(static_cast<uint32_t>(draws.Between(3, 1000)));
      return grpc::StatusCode::INVALID_ARGUMENT;
    case 2:
      request->set_num_images(100000 + static_cast<uint32_t>(draws.Between(0, 1000)));
      return grpc::StatusCode::INVALID_ARGUMENT;
    case 3:
      request->set_format(static_cast<v1::ImageFormat>(draws.Between(2, 99)));
      return grpc::StatusCode::INVALID_ARGUMENT;
    default:
      request->set_class_label(draws.Unit() < 0.5 ? -draws.Between(1, 5) : options.num_classes + draws.Between(0, 5));
      return grpc::StatusCode::INVALID_ARGUMENT;
  }
}

std::string CallName(const CallPlan& plan) {
  return absl::StrCat(plan.stream ? "GenerateStream " : "Generate ", BehaviourName(plan.behaviour));
}

// Cancels `context` after `delay_ms` unless the call ended first.
class DelayedCancel {
 public:
  DelayedCancel(grpc::ClientContext* context, int delay_ms)
      : thread_([this, context, delay_ms] {
          std::unique_lock<std::mutex> lock(mu_);
          if (!cv_.wait_for(lock, std::chrono::milliseconds(delay_ms), [this] { return done_; })) context->TryCancel();
        }) {}
  ~DelayedCancel() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

// Sends one planned call; returns its code and the complete images it delivered.
std::pair<grpc::StatusCode, int> Send(v1::TcmService::Stub& stub, const CallPlan& plan, const TrafficOptions& options,
                                      std::string* problem) {
  grpc::ClientContext context;
  const double deadline_s =
      plan.behaviour == Behaviour::kShortDeadline ? plan.delay_ms / 1000.0 : options.call_timeout_s;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::microseconds(static_cast<int64_t>(deadline_s * 1e6)));
  std::optional<DelayedCancel> cancel;
  if (plan.behaviour == Behaviour::kCancelAfterDelay) cancel.emplace(&context, plan.delay_ms);

  int images = 0;
  grpc::Status status;
  if (plan.stream) {
    auto reader = stub.GenerateStream(&context, plan.request);
    std::vector<bool> seen(std::max<uint32_t>(plan.request.num_images(), 1), false);
    std::vector<bool> previewed(seen.size(), false);
    for (v1::GenerateStreamResponse message; reader->Read(&message);) {
      v1::GenerateResponse one;  // each message is checked as a one-image answer
      *one.add_images() = message.image();
      one.set_model(message.model());
      v1::GenerateRequest asked = plan.request;
      const uint32_t index = message.image().index();
      // A preview: asked for, once per image, before that image's final.
      std::vector<bool>& once = message.preview() ? previewed : seen;
      if (index >= once.size() || once[index]) {
        *problem = absl::StrCat(message.preview() ? "preview" : "image", " index ", index, " out of range or repeated");
      } else if (message.preview() && (!plan.request.preview() || seen[index])) {
        *problem = absl::StrCat("preview of image ", index, plan.request.preview() ? " after its final" : " not asked");
      } else {
        once[index] = true;
        one.mutable_images(0)->set_index(0);
        asked.set_num_images(1);
        const absl::Status check = CheckGenerateResponse(asked, one);
        if (!check.ok()) *problem = std::string(check.message());
      }
      if (message.preview()) continue;
      ++images;
      if (plan.behaviour == Behaviour::kCancelAfterFirstImage) context.TryCancel();
    }
    status = reader->Finish();
  } else {
    v1::GenerateResponse response;
    status = stub.Generate(&context, plan.request, &response);
    if (status.ok()) {
      const absl::Status check = CheckGenerateResponse(plan.request, response);
      if (!check.ok()) *problem = std::string(check.message());
    }
    images = response.images_size();
  }
  return {status.error_code(), images};
}

}  // namespace

const char* BehaviourName(Behaviour behaviour) {
  switch (behaviour) {
    case Behaviour::kComplete:
      return "complete";
    case Behaviour::kCancelAfterDelay:
      return "cancel_after_delay";
    case Behaviour::kCancelAfterFirstImage:
      return "cancel_after_first_image";
    case Behaviour::kShortDeadline:
      return "short_deadline";
    case Behaviour::kBadRequest:
      return "bad_request";
  }
  return "unknown";
}

CallPlan PlanCall(uint64_t seed, int caller, uint64_t n, const TrafficOptions& options) {
  Draws draws(SplitMix64(SplitMix64(seed) ^ (static_cast<uint64_t>(caller) << 40) ^ n));
  CallPlan plan;
  plan.stream = draws.Unit() < options.stream_fraction;
  plan.request.set_model(options.model);
  plan.request.set_steps(draws.Unit() < options.two_step_fraction ? 2 : 1);
  plan.request.set_num_images(static_cast<uint32_t>(draws.Between(1, std::max(1, options.max_images))));
  plan.request.set_seed(draws.Bits() >> 1);
  plan.request.set_format(draws.Unit() < 0.5 ? v1::IMAGE_FORMAT_PNG : v1::IMAGE_FORMAT_RAW);
  if (options.num_classes > 0 && draws.Unit() < 0.5)
    plan.request.set_class_label(draws.Between(0, options.num_classes - 1));
  // Half the 2-step streams ask for previews (from the seed's low bit: the other draws stay as they were).
  plan.request.set_preview(plan.stream && plan.request.steps() == 2 && (plan.request.seed() & 1) != 0);
  plan.delay_ms = draws.Between(1, std::max(1, options.max_delay_ms));
  if (draws.Unit() >= options.misbehaving_fraction) return plan;
  const int kinds = plan.stream ? 4 : 3;
  switch (draws.Between(0, kinds - 1)) {
    case 0:
      plan.behaviour = Behaviour::kBadRequest;
      plan.bad_request_code = MakeBad(draws, options, &plan.request);
      break;
    case 1:
      plan.behaviour = Behaviour::kCancelAfterDelay;
      break;
    case 2:
      plan.behaviour = Behaviour::kShortDeadline;
      break;
    default:
      plan.behaviour = Behaviour::kCancelAfterFirstImage;
      break;
  }
  return plan;
}

std::string CheckOutcome(const CallPlan& plan, grpc::StatusCode code, int images) {
  const int asked = static_cast<int>(std::max<uint32_t>(plan.request.num_images(), 1));
  const std::string got = absl::StrCat(load::StatusCodeName(code), " after ", images, " of ", asked, " images");
  if (plan.behaviour == Behaviour::kBadRequest) {
    if (code == plan.bad_request_code && images == 0) return "";
    return absl::StrCat("expected ", load::StatusCodeName(plan.bad_request_code), ", got ", got);
  }
  if (code == grpc::StatusCode::OK) return images == asked ? "" : absl::StrCat("OK with missing images: ", got);
  if (images > asked || (!plan.stream && images > 0)) return absl::StrCat("too many images: ", got);
  switch (plan.behaviour) {
    case Behaviour::kCancelAfterDelay:
    case Behaviour::kCancelAfterFirstImage:
      if (code == grpc::StatusCode::CANCELLED) return "";
      break;
    case Behaviour::kShortDeadline:
      if (code == grpc::StatusCode::DEADLINE_EXCEEDED) return "";
      break;
    default:
      break;
  }
  return absl::StrCat("unexpected ", got);
}

void TrafficReport::Merge(const TrafficReport& other) {
  calls += other.calls;
  images_received += other.images_received;
  for (const auto& [name, count] : other.outcomes) outcomes[name] += count;
  for (const auto& [name, count] : other.codes) codes[name] += count;
  unexpected_count += other.unexpected_count;
  for (const auto& line : other.unexpected)
    if (unexpected.size() < 20) unexpected.push_back(line);
}

std::string TrafficReport::Summary() const {
  std::string text = absl::StrCat(calls, " calls, ", images_received, " images received, ", unexpected_count,
                                  " unexpected outcomes\n");
  for (const auto& [name, count] : outcomes) absl::StrAppend(&text, "  ", name, ": ", count, "\n");
  for (const auto& line : unexpected) absl::StrAppend(&text, "  UNEXPECTED ", line, "\n");
  return text;
}

TrafficReport RunTraffic(v1::TcmService::Stub& stub, uint64_t seed, int callers, int64_t calls_per_caller,
                         const TrafficOptions& options, const std::atomic<bool>& stop) {
  std::vector<TrafficReport> reports(static_cast<size_t>(std::max(callers, 0)));
  std::atomic<bool> refused{false};  // set where the system refuses a caller's thread
  const absl::Status ran = load::RunOnThreads(callers, refused, [&](int c) {
    TrafficReport& report = reports[static_cast<size_t>(c)];
    for (uint64_t n = 0; !stop && !refused && (calls_per_caller <= 0 || static_cast<int64_t>(n) < calls_per_caller);
         ++n) {
      const CallPlan plan = PlanCall(seed, c, n, options);
      std::string problem;
      const auto [code, images] = Send(stub, plan, options, &problem);
      if (problem.empty()) problem = CheckOutcome(plan, code, images);
      ++report.calls;
      report.images_received += images;
      const std::string code_name = load::StatusCodeName(code);
      ++report.outcomes[absl::StrCat(CallName(plan), " ", code_name)];
      ++report.codes[code_name];
      if (!problem.empty()) {
        ++report.unexpected_count;
        if (report.unexpected.size() < 20)
          report.unexpected.push_back(absl::StrCat("caller ", c, " call ", n, " (", CallName(plan), ", ",
                                                   plan.request.num_images(), " images, ", plan.request.steps(),
                                                   " steps, delay ", plan.delay_ms, " ms): ", problem));
      }
    }
  });
  TrafficReport total;
  for (const auto& r : reports) total.Merge(r);
  if (!ran.ok()) {
    ++total.unexpected_count;
    total.unexpected.push_back(absl::StrCat("--callers ", callers, ": ", ran.message()));
  }
  return total;
}

}  // namespace tcm::traffic
