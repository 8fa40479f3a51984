// The pure core of tcm-bench, the load generator: flag-list parsing, the
// seeded request mix, arrival schedules, percentiles and the per-level
// summary (table row and JSON). Torch-free and gRPC-free, so that it is
// unit-tested on its own (load_core_test.cc).
//
// What a level measures. A level runs for `warmup + duration` seconds; the
// measurement window is the last `duration` seconds.
//   - throughput (requests/s, images/s): OK responses that *arrived* in the
//     window, divided by the window's length;
//   - latency percentiles and error counts: requests *sent* in the window,
//     each followed to its end (response, error or deadline), so that slow
//     requests of an overloaded level are not left out of the percentiles.
#ifndef TCM_CLIENT_LOAD_CORE_H_
#define TCM_CLIENT_LOAD_CORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/splitmix.h"
#include "nlohmann/json.hpp"

namespace tcm {
namespace load {

// "1,2,4,8" -> {1, 2, 4, 8}. Every entry must be a positive integer; `flag`
// names the flag in the error ("--concurrency: ...").
absl::StatusOr<std::vector<int>> ParsePositiveInts(absl::string_view text, absl::string_view flag);

// The most client threads one level or run may start (--concurrency, --callers).
inline constexpr int kMaxClientThreads = 4096;

// Runs body(i) on `n` threads, i = 0..n-1, and joins them. Where the system
// refuses a thread, `stop` is set (each body returns soon once it is), the
// threads started are joined, and the error says how many started.
absl::Status RunOnThreads(int n, std::atomic<bool>& stop, const std::function<void(int)>& body);
// "5,10,2.5" -> {5, 10, 2.5}. Every entry must be a positive finite number.
absl::StatusOr<std::vector<double>> ParsePositiveDoubles(absl::string_view text, absl::string_view flag);

using ::tcm::SplitMix64;
// 53 random bits of `bits` as a double in [0, 1).
double UnitInterval(uint64_t bits);

// What request number `n` of a level asks for.
struct RequestPlan {
  int steps = 1;      // 1 or 2
  uint64_t seed = 0;  // the request's seed (so runs are reproducible)
};

// The request mix: request `n` (0-based, in the order requests are issued)
// takes 2 steps with probability `two_step_fraction`, else 1, drawn from a
// counter-based generator seeded with `seed`. Plan(n) is a function of
// (seed, two_step_fraction, n) alone, whichever thread issues the request.
class RequestMix {
 public:
  RequestMix(uint64_t seed, double two_step_fraction) : seed_(seed), two_step_fraction_(two_step_fraction) {}
  RequestPlan Plan(uint64_t n) const;
  double two_step_fraction() const { return two_step_fraction_; }

 private:
  uint64_t seed_;
  double two_step_fraction_;
};

enum class Arrivals { kConstant, kPoisson };
absl::StatusOr<Arrivals> ParseArrivals(absl::string_view text);
const char* ArrivalsName(Arrivals arrivals);

// The most open-loop arrivals per second a level may ask for (tcm-bench
// --rates): far above what one server answers, and low enough that one thread
// walks every arrival of a level, sent or dropped, as fast as they come.
inline constexpr double kMaxRate = 1e5;

// Open-loop arrival times, in seconds from the start of a level: constant
// (request k at k / rate) or Poisson (exponential gaps of mean 1 / rate from a
// generator seeded with `seed`). `rate` is positive and at most kMaxRate.
class ArrivalSchedule {
 public:
  ArrivalSchedule(double rate, Arrivals arrivals, uint64_t seed) : rate_(rate), arrivals_(arrivals), state_(seed) {}
  // The arrival time of the next request (the first is at 0).
  double Next();
  // Passes over the arrivals before `t` (so that Next() returns the first at
  // or after it) and returns how many there were. Constant arrivals take O(1),
  // Poisson ones one draw each.
  int64_t SkipBefore(double t);

 private:
  double rate_;
  Arrivals arrivals_;
  uint64_t state_;
  uint64_t count_ = 0;
  double next_ = 0;
};

// What RunArrivals did with a level's arrivals.
struct ArrivalCounts {
  int64_t sent = 0;  // `send` returned true
  // Arrivals at or after the window's start that were not sent: refused by
  // `send`, or still due when the level's time ran out.
  int64_t dropped = 0;
};

// Drives an open-loop level. For each arrival of `schedule` before `end`
// (seconds from the level's start), in order, it calls wait_until(at), then
// send(n, at), n = 0, 1, ... numbering every arrival; `send` returns whether
// it sent the request (false: dropped, e.g. too many calls outstanding).
// `now()` is the time since the level's start. Once now() reaches `end`, the
// arrivals still due (the sender fell behind the rate) are not sent and count
// as dropped, so the loop returns by `end` plus one call of `send`, however
// high the rate.
ArrivalCounts RunArrivals(ArrivalSchedule& schedule, double window_start, double end,
                          const std::function<double()>& now, const std::function<void(double)>& wait_until,
                          const std::function<bool(uint64_t, double)>& send);

// The p-th percentile (p in [0, 100]) of `values`, interpolating linearly
// between the closest ranks (numpy's default); NaN when `values` is empty.
double Percentile(std::vector<double> values, double p);

// The gRPC status code's name ("OK", "UNAVAILABLE", ...), or "CODE_<n>".
std::string StatusCodeName(int code);

// One call, as the load generator saw it. Times in seconds from the start of
// its level.
struct CallRecord {
  double start = 0;
  double end = 0;
  int code = 0;             // grpc::StatusCode; 0 = OK
  int images = 0;           // images in the response (OK calls)
  int steps = 1;            // what the request asked for
  double server_total = 0;  // the response's timings (OK calls), seconds
  double server_queue = 0;
  double server_compute = 0;
};

enum class LoadMode { kConcurrency, kRate };

struct LevelSummary {
  LoadMode mode = LoadMode::kConcurrency;
  double level = 0;  // clients (concurrency), or offered requests/s (rate)
  double warmup_s = 0, window_s = 0;
  int64_t sent = 0;     // requests sent in the window
  int64_t dropped = 0;  // open loop: arrivals in the window not sent (--max_inflight reached, or still due at the end)
  int64_t ok = 0;       // OK responses that arrived in the window
  int64_t images = 0;   // images in those responses
  double sent_per_s = 0, requests_per_s = 0, images_per_s = 0;
  // Goodput: images of the calls sent in the window that answered OK, so
  // within their deadline (--timeout), per second of the window.
  int64_t images_in_time = 0;
  double goodput_images_per_s = 0;
  // Latency (ms) of the OK requests sent in the window; NaN when there is none.
  int64_t latency_count = 0;
  double p50_ms = 0, p90_ms = 0, p99_ms = 0, mean_ms = 0, max_ms = 0;
  double p50_ms_1step = 0, p50_ms_2step = 0;
  // Medians of the server's own timings over the same requests (ms).
  double server_total_p50_ms = 0, server_queue_p50_ms = 0, server_compute_p50_ms = 0;
  std::map<std::string, int64_t> errors;  // status name -> count, requests sent in the window
  // Latency (ms) of the calls refused with RESOURCE_EXHAUSTED (a full queue),
  // sent in the window: how fast an overloaded server says no. NaN when none.
  double rejected_p50_ms = 0, rejected_p99_ms = 0, rejected_max_ms = 0;
  int64_t error_count() const;
};

// Summarises one level's calls; the window is [window_start, window_end).
LevelSummary Summarize(LoadMode mode, double level, const std::vector<CallRecord>& calls, double window_start,
                       double window_end, int64_t dropped);

// The aligned table: a header line, then one line per level (so rows can be
// printed as levels finish). Errors are listed last as NAME:count.
std::string TableHeader();
std::string TableRow(const LevelSummary& summary);

nlohmann::json ToJson(const LevelSummary& summary);

}  // namespace load
}  // namespace tcm

#endif  // TCM_CLIENT_LOAD_CORE_H_
