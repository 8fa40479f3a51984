#include "client/load_core.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <system_error>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace tcm {
namespace load {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr int kResourceExhausted = 8;  // grpc::StatusCode::RESOURCE_EXHAUSTED

template <typename T, typename ParseFn>
absl::StatusOr<std::vector<T>> ParseList(absl::string_view text, absl::string_view flag, const char* what,
                                         ParseFn parse) {
  std::vector<T> out;
  if (absl::StripAsciiWhitespace(text).empty())
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": expected ", what, " separated by commas"));
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    part = absl::StripAsciiWhitespace(part);
    T value;
    if (!parse(part, &value))
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": '", part, "' is not valid; expected ", what, " separated by commas"));
    out.push_back(value);
  }
  return out;
}

double Ms(double seconds) { return seconds * 1e3; }

}  // namespace

absl::StatusOr<std::vector<int>> ParsePositiveInts(absl::string_view text, absl::string_view flag) {
  return ParseList<int>(text, flag, "positive integers",
                        [](absl::string_view s, int* v) { return absl::SimpleAtoi(s, v) && *v > 0; });
}

absl::StatusOr<std::vector<double>> ParsePositiveDoubles(absl::string_view text, absl::string_view flag) {
  return ParseList<double>(text, flag, "positive numbers", [](absl::string_view s, double* v) {
    return absl::SimpleAtod(s, v) && std::isfinite(*v) && *v > 0;
  });
}

absl::Status RunOnThreads(int n, std::atomic<bool>& stop, const std::function<void(int)>& body) {
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(std::max(n, 0)));  // no reallocation while threads run
  absl::Status status;
  for (int i = 0; i < n; ++i) {
    try {
      threads.emplace_back(body, i);
    } catch (const std::exception& e) {  // std::system_error: the system refused the thread
      stop = true;
      status = absl::ResourceExhaustedError(
          absl::StrCat("could start only ", i, " of ", n, " client threads (", e.what(), ")"));
      break;
    }
  }
  for (auto& t : threads) t.join();
  return status;
}

double UnitInterval(uint64_t bits) { return static_cast<double>(bits >> 11) * 0x1.0p-53; }

RequestPlan RequestMix::Plan(uint64_t n) const {
  const uint64_t h = SplitMix64(SplitMix64(seed_) ^ SplitMix64(n ^ 0x5bd1e995ULL));
  RequestPlan plan;
  plan.steps = UnitInterval(h) < two_step_fraction_ ? 2 : 1;
  plan.seed = SplitMix64(h);
  return plan;
}

absl::StatusOr<Arrivals> ParseArrivals(absl::string_view text) {
  if (text == "constant") return Arrivals::kConstant;
  if (text == "poisson") return Arrivals::kPoisson;
  return absl::InvalidArgumentError(absl::StrCat("--arrivals: '", text, "' is not constant or poisson"));
}

const char* ArrivalsName(Arrivals arrivals) { return arrivals == Arrivals::kConstant ? "constant" : "poisson"; }

double ArrivalSchedule::Next() {
  if (arrivals_ == Arrivals::kConstant) return static_cast<double>(count_++) / rate_;
  const double t = next_;
  state_ = SplitMix64(state_);
  next_ += -std::log1p(-UnitInterval(state_)) / rate_;  // u in [0, 1): the gap is finite
  ++count_;
  return t;
}

int64_t ArrivalSchedule::SkipBefore(double t) {
  if (arrivals_ == Arrivals::kConstant) {
    // The first k with k / rate >= t, as Next() computes it, from an estimate
    // a step or two away; capped at 2^62, which no level reaches.
    constexpr uint64_t kLast = uint64_t{1} << 62;
    const double guess = std::ceil(t * rate_);
    uint64_t first = !(guess > 0) ? 0 : guess >= 0x1.0p62 ? kLast : static_cast<uint64_t>(guess);
    while (first > 0 && static_cast<double>(first - 1) / rate_ >= t) --first;
    while (first < kLast && static_cast<double>(first) / rate_ < t) ++first;
    if (first <= count_) return 0;
    const int64_t skipped = static_cast<int64_t>(first - count_);
    count_ = first;
    return skipped;
  }
  int64_t skipped = 0;
  while (next_ < t) {
    Next();
    ++skipped;
  }
  return skipped;
}

ArrivalCounts RunArrivals(ArrivalSchedule& schedule, double window_start, double end,
                          const std::function<double()>& now, const std::function<void(double)>& wait_until,
                          const std::function<bool(uint64_t, double)>& send) {
  ArrivalCounts counts;
  for (uint64_t n = 0;; ++n) {
    const double at = schedule.Next();
    if (at >= end) break;
    if (now() >= end) {
      // Out of time: this arrival and the rest before `end` are not sent.
      if (at < window_start) {
        schedule.SkipBefore(window_start);
      } else {
        ++counts.dropped;
      }
      counts.dropped += schedule.SkipBefore(end);
      break;
    }
    wait_until(at);
    if (send(n, at)) {
      ++counts.sent;
    } else if (at >= window_start) {
      ++counts.dropped;
    }
  }
  return counts;
}

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return kNaN;
  std::sort(values.begin(), values.end());
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (rank - static_cast<double>(lo)) * (values[hi] - values[lo]);
}

std::string StatusCodeName(int code) {
  static const char* const kNames[] = {
      "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
      "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
      "DATA_LOSS", "UNAUTHENTICATED"};
  if (code >= 0 && code <= 16) return kNames[code];
  return absl::StrCat("CODE_", code);
}

int64_t LevelSummary::error_count() const {
  int64_t n = 0;
  for (const auto& [name, count] : errors) n += count;
  return n;
}

LevelSummary Summarize(LoadMode mode, double level, const std::vector<CallRecord>& calls, double window_start,
                       double window_end, int64_t dropped) {
  LevelSummary s;
  s.mode = mode;
  s.level = level;
  s.warmup_s = window_start;
  s.window_s = window_end - window_start;
  s.dropped = dropped;
  auto in_window = [&](double t) { return t >= window_start && t < window_end; };
  std::vector<double> latency, latency1, latency2, server_total, server_queue, server_compute, rejected;
  double sum = 0, max = kNaN;
  for (const CallRecord& c : calls) {
    if (c.code == 0 && in_window(c.end)) {
      ++s.ok;
      s.images += c.images;
    }
    if (!in_window(c.start)) continue;
    ++s.sent;
    if (c.code != 0) {
      ++s.errors[StatusCodeName(c.code)];
      if (c.code == kResourceExhausted) rejected.push_back(Ms(c.end - c.start));
      continue;
    }
    s.images_in_time += c.images;
    const double ms = Ms(c.end - c.start);
    latency.push_back(ms);
    (c.steps == 2 ? latency2 : latency1).push_back(ms);
    sum += ms;
    max = std::isnan(max) ? ms : std::max(max, ms);
    server_total.push_back(Ms(c.server_total));
    server_queue.push_back(Ms(c.server_queue));
    server_compute.push_back(Ms(c.server_compute));
  }
  const double window = s.window_s > 0 ? s.window_s : kNaN;
  s.sent_per_s = static_cast<double>(s.sent) / window;
  s.requests_per_s = static_cast<double>(s.ok) / window;
  s.images_per_s = static_cast<double>(s.images) / window;
  s.goodput_images_per_s = static_cast<double>(s.images_in_time) / window;
  s.latency_count = static_cast<int64_t>(latency.size());
  s.p50_ms = Percentile(latency, 50);
  s.p90_ms = Percentile(latency, 90);
  s.p99_ms = Percentile(latency, 99);
  s.mean_ms = latency.empty() ? kNaN : sum / static_cast<double>(latency.size());
  s.max_ms = max;
  s.p50_ms_1step = Percentile(latency1, 50);
  s.p50_ms_2step = Percentile(latency2, 50);
  s.server_total_p50_ms = Percentile(server_total, 50);
  s.server_queue_p50_ms = Percentile(server_queue, 50);
  s.server_compute_p50_ms = Percentile(server_compute, 50);
  s.rejected_p50_ms = Percentile(rejected, 50);
  s.rejected_p99_ms = Percentile(rejected, 99);
  s.rejected_max_ms = rejected.empty() ? kNaN : *std::max_element(rejected.begin(), rejected.end());
  return s;
}

namespace {

constexpr char kRowFormat[] = "%-12s %7s %8s %8s %8s %9s %9s %9s %8s  %s";

std::string Num(double v, int decimals) {
  return std::isnan(v) ? std::string("-") : absl::StrFormat("%.*f", decimals, v);
}

}  // namespace

std::string TableHeader() {
  return absl::StrFormat(kRowFormat, "mode", "level", "sent/s", "req/s", "img/s", "p50 ms", "p90 ms", "p99 ms",
                         "dropped", "errors");
}

std::string TableRow(const LevelSummary& s) {
  const bool rate = s.mode == LoadMode::kRate;
  std::vector<std::string> errors;
  for (const auto& [name, count] : s.errors) {
    errors.push_back(absl::StrCat(name, ":", count));
    if (name == "RESOURCE_EXHAUSTED") absl::StrAppend(&errors.back(), "(p99 ", Num(s.rejected_p99_ms, 2), " ms)");
  }
  return absl::StrFormat(kRowFormat, rate ? "rate" : "concurrency",
                         rate ? absl::StrFormat("%g", s.level) : absl::StrCat(static_cast<int64_t>(s.level)),
                         Num(s.sent_per_s, 2), Num(s.requests_per_s, 2), Num(s.images_per_s, 2), Num(s.p50_ms, 1),
                         Num(s.p90_ms, 1), Num(s.p99_ms, 1), rate ? absl::StrCat(s.dropped) : std::string("-"),
                         errors.empty() ? std::string("0") : absl::StrJoin(errors, " "));
}

nlohmann::json ToJson(const LevelSummary& s) {
  // NaN (no data) becomes null.
  auto num = [](double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); };
  nlohmann::json j;
  if (s.mode == LoadMode::kRate) {
    j["mode"] = "rate";
    j["offered_requests_per_s"] = s.level;
  } else {
    j["mode"] = "concurrency";
    j["concurrency"] = static_cast<int64_t>(s.level);
  }
  j["warmup_s"] = s.warmup_s;
  j["window_s"] = s.window_s;
  j["sent"] = s.sent;
  j["sent_per_s"] = num(s.sent_per_s);
  j["dropped"] = s.dropped;
  j["ok"] = s.ok;
  j["images"] = s.images;
  j["requests_per_s"] = num(s.requests_per_s);
  j["images_per_s"] = num(s.images_per_s);
  j["goodput_images_per_s"] = num(s.goodput_images_per_s);
  j["latency_ms"] = {{"count", s.latency_count},
                     {"p50", num(s.p50_ms)},
                     {"p90", num(s.p90_ms)},
                     {"p99", num(s.p99_ms)},
                     {"mean", num(s.mean_ms)},
                     {"max", num(s.max_ms)},
                     {"p50_1step", num(s.p50_ms_1step)},
                     {"p50_2step", num(s.p50_ms_2step)}};
  j["server_ms_p50"] = {{"total", num(s.server_total_p50_ms)},
                        {"queue", num(s.server_queue_p50_ms)},
                        {"compute", num(s.server_compute_p50_ms)}};
  j["rejected_latency_ms"] = {{"count", s.errors.count("RESOURCE_EXHAUSTED") ? s.errors.at("RESOURCE_EXHAUSTED") : 0},
                              {"p50", num(s.rejected_p50_ms)},
                              {"p99", num(s.rejected_p99_ms)},
                              {"max", num(s.rejected_max_ms)}};
  j["errors"] = nlohmann::json::object();
  for (const auto& [name, count] : s.errors) j["errors"][name] = count;
  j["error_count"] = s.error_count();
  return j;
}

}  // namespace load
}  // namespace tcm
