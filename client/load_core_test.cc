#include "client/load_core.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <set>
#include <thread>
#include <vector>

namespace tcm {
namespace load {
namespace {

TEST(ParseListTest, ParsesPositiveIntegers) {
  auto levels = ParsePositiveInts("1,2, 4 ,8", "concurrency");
  ASSERT_TRUE(levels.ok()) << levels.status();
  EXPECT_EQ(*levels, (std::vector<int>{1, 2, 4, 8}));
}

TEST(ParseListTest, RejectsBadIntegersNamingTheFlag) {
  for (const char* text : {"", "1,,2", "0", "-1", "a", "1.5", "2,x"}) {
    auto levels = ParsePositiveInts(text, "concurrency");
    ASSERT_FALSE(levels.ok()) << text;
    EXPECT_NE(levels.status().message().find("--concurrency:"), std::string::npos) << levels.status();
  }
}

TEST(ParseListTest, ParsesPositiveNumbers) {
  auto rates = ParsePositiveDoubles("5,2.5,20", "rates");
  ASSERT_TRUE(rates.ok()) << rates.status();
  EXPECT_EQ(*rates, (std::vector<double>{5, 2.5, 20}));
  for (const char* text : {"0", "-3", "nan", "inf", "5,", "five"})
    EXPECT_FALSE(ParsePositiveDoubles(text, "rates").ok()) << text;
}

TEST(RequestMixTest, PlanIsAFunctionOfSeedAndIndexAlone) {
  const RequestMix a(7, 0.5), b(7, 0.5), other(8, 0.5);
  int differ = 0;
  for (uint64_t n = 0; n < 100; ++n) {
    EXPECT_EQ(a.Plan(n).steps, b.Plan(n).steps);
    EXPECT_EQ(a.Plan(n).seed, b.Plan(n).seed);
    differ += a.Plan(n).seed != other.Plan(n).seed;
  }
  EXPECT_EQ(differ, 100);
  // Asking out of order gives the same answers.
  EXPECT_EQ(a.Plan(42).seed, RequestMix(7, 0.5).Plan(42).seed);
}

TEST(RequestMixTest, TwoStepShareFollowsTheFraction) {
  for (double f : {0.0, 0.25, 0.5, 1.0}) {
    const RequestMix mix(1, f);
    const int n = 20000;
    int two = 0;
    std::set<uint64_t> seeds;
    for (int i = 0; i < n; ++i) {
      const RequestPlan plan = mix.Plan(i);
      ASSERT_TRUE(plan.steps == 1 || plan.steps == 2);
      two += plan.steps == 2;
      seeds.insert(plan.seed);
    }
    EXPECT_NEAR(static_cast<double>(two) / n, f, 0.015) << f;
    EXPECT_EQ(seeds.size(), static_cast<size_t>(n));  // every request its own seed
  }
}

TEST(ArrivalScheduleTest, ConstantArrivalsAreEvenlySpaced) {
  ArrivalSchedule s(10, Arrivals::kConstant, 1);
  EXPECT_DOUBLE_EQ(s.Next(), 0.0);
  EXPECT_DOUBLE_EQ(s.Next(), 0.1);
  EXPECT_DOUBLE_EQ(s.Next(), 0.2);
  for (int i = 3; i < 1000; ++i) s.Next();
  EXPECT_NEAR(s.Next(), 100.0, 1e-9);
}

TEST(ArrivalScheduleTest, PoissonArrivalsHaveTheRateAndAreSeeded) {
  const double rate = 20;
  ArrivalSchedule s(rate, Arrivals::kPoisson, 3), same(rate, Arrivals::kPoisson, 3);
  EXPECT_DOUBLE_EQ(s.Next(), 0.0);
  same.Next();
  double last = 0, sum_sq = 0;
  const int n = 40000;
  for (int i = 0; i < n; ++i) {
    const double t = s.Next();
    ASSERT_EQ(t, same.Next());
    ASSERT_GE(t, last);
    sum_sq += (t - last) * (t - last);
    last = t;
  }
  const double mean_gap = last / n;
  EXPECT_NEAR(mean_gap, 1 / rate, 0.02 / rate);
  // Exponential gaps: E[g^2] = 2 / rate^2 (constant gaps would give 1 / rate^2).
  EXPECT_NEAR(sum_sq / n, 2 / (rate * rate), 0.1 / (rate * rate));
}

TEST(ArrivalScheduleTest, SkipBeforeAgreesWithNext) {
  for (const Arrivals arrivals : {Arrivals::kConstant, Arrivals::kPoisson}) {
    for (const double rate : {10.0, 3.0, 7.3, 1000.0}) {
      for (const double t : {0.0, 1e-9, 0.25, 0.3, 1.0, 2.5, 13.7}) {
        ArrivalSchedule skipped(rate, arrivals, 5), stepped(rate, arrivals, 5);
        skipped.Next();  // skipping from part-way through a schedule
        stepped.Next();
        int64_t before = 0;
        double next = stepped.Next();
        for (; next < t; next = stepped.Next()) ++before;
        EXPECT_EQ(skipped.SkipBefore(t), before) << ArrivalsName(arrivals) << " " << rate << " " << t;
        EXPECT_EQ(skipped.Next(), next) << ArrivalsName(arrivals) << " " << rate << " " << t;
        EXPECT_EQ(skipped.SkipBefore(0), 0);  // nothing left before an earlier time
      }
    }
  }
  ArrivalSchedule s(10, Arrivals::kConstant, 1);
  EXPECT_EQ(s.SkipBefore(0.25), 3);  // 0, 0.1, 0.2
  EXPECT_DOUBLE_EQ(s.Next(), 0.3);
}

// A level's clock for RunArrivals: waiting moves it to the arrival's time,
// and each send takes `send_seconds`.
struct FakeLevel {
  double clock = 0;
  double send_seconds = 0;
  std::vector<uint64_t> sent;
  ArrivalCounts Run(ArrivalSchedule& schedule, double window_start, double end, bool accept = true) {
    return RunArrivals(
        schedule, window_start, end, [this] { return clock; }, [this](double at) { clock = std::max(clock, at); },
        [this, accept](uint64_t n, double) {
          clock += send_seconds;
          if (accept) sent.push_back(n);
          return accept;
        });
  }
};

TEST(RunArrivalsTest, SendsEveryArrivalBeforeTheEndInOrder) {
  ArrivalSchedule schedule(100, Arrivals::kConstant, 1);
  FakeLevel level;
  const ArrivalCounts counts = level.Run(schedule, 0.5, 1.5);
  EXPECT_EQ(counts.sent, 150);
  EXPECT_EQ(counts.dropped, 0);
  ASSERT_EQ(level.sent.size(), 150u);
  for (size_t i = 0; i < level.sent.size(); ++i) EXPECT_EQ(level.sent[i], i);
}

TEST(RunArrivalsTest, CountsRefusalsInTheWindowOnly) {
  ArrivalSchedule schedule(100, Arrivals::kConstant, 1);
  FakeLevel level;
  const ArrivalCounts counts = level.Run(schedule, 0.5, 1.5, /*accept=*/false);
  EXPECT_EQ(counts.sent, 0);
  EXPECT_EQ(counts.dropped, 100);  // arrivals at 0.5, ..., 1.49
}

// A sender slower than the rate: the level still ends on time, and what it
// could not send is dropped, however many arrivals that is.
TEST(RunArrivalsTest, EndsOnTimeWhenTheSenderFallsBehind) {
  struct Case {
    double rate;
    Arrivals arrivals;
  };
  for (const Case c :
       {Case{kMaxRate, Arrivals::kConstant}, Case{kMaxRate, Arrivals::kPoisson}, Case{1e12, Arrivals::kConstant}}) {
    ArrivalSchedule schedule(c.rate, c.arrivals, 9);
    FakeLevel level;
    level.send_seconds = 1.0 / 64;
    const ArrivalCounts counts = level.Run(schedule, 0, 1);
    EXPECT_EQ(counts.sent, 64) << c.rate;  // one send per 1/64 s until the end
    EXPECT_LE(level.clock, 1.0 + level.send_seconds) << c.rate;
    if (c.arrivals == Arrivals::kConstant) {
      EXPECT_EQ(counts.sent + counts.dropped, static_cast<int64_t>(c.rate)) << c.rate;
    } else {
      EXPECT_NEAR(static_cast<double>(counts.sent + counts.dropped), c.rate, 5 * std::sqrt(c.rate));
    }
  }
}

TEST(RunArrivalsTest, OutOfTimeBeforeTheWindowDropsOnlyTheWindowsArrivals) {
  ArrivalSchedule schedule(10, Arrivals::kConstant, 1);
  FakeLevel level;
  level.send_seconds = 2;  // the first send outlasts the level
  const ArrivalCounts counts = level.Run(schedule, 0.5, 1.0);
  EXPECT_EQ(counts.sent, 1);
  EXPECT_EQ(counts.dropped, 5);  // 0.5, ..., 0.9; not 0.1, ..., 0.4 (warm-up)
}

TEST(ParseArrivalsTest, NamesTheChoices) {
  EXPECT_EQ(*ParseArrivals("constant"), Arrivals::kConstant);
  EXPECT_EQ(*ParseArrivals("poisson"), Arrivals::kPoisson);
  auto bad = ParseArrivals("uniform");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("constant or poisson"), std::string::npos);
}

TEST(PercentileTest, InterpolatesBetweenClosestRanks) {
  const std::vector<double> v = {5, 1, 4, 2, 3};  // unsorted on purpose
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 3);
  EXPECT_DOUBLE_EQ(Percentile(v, 90), 4.6);
  EXPECT_DOUBLE_EQ(Percentile(v, 100), 5);
  std::vector<double> hundred;
  for (int i = 1; i <= 100; ++i) hundred.push_back(i);
  EXPECT_NEAR(Percentile(hundred, 99), 99.01, 1e-9);
  EXPECT_NEAR(Percentile(hundred, 50), 50.5, 1e-9);
  EXPECT_DOUBLE_EQ(Percentile({7}, 99), 7);
  EXPECT_TRUE(std::isnan(Percentile({}, 50)));
}

TEST(StatusCodeNameTest, NamesGrpcCodes) {
  EXPECT_EQ(StatusCodeName(0), "OK");
  EXPECT_EQ(StatusCodeName(4), "DEADLINE_EXCEEDED");
  EXPECT_EQ(StatusCodeName(8), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(StatusCodeName(14), "UNAVAILABLE");
  EXPECT_EQ(StatusCodeName(99), "CODE_99");
}

CallRecord Call(double start, double end, int code, int images = 1, int steps = 1) {
  CallRecord c;
  c.start = start;
  c.end = end;
  c.code = code;
  c.images = code == 0 ? images : 0;
  c.steps = steps;
  c.server_total = (end - start) / 2;
  return c;
}

TEST(SummarizeTest, ThroughputCountsArrivalsLatencyCountsSends) {
  // Window [2, 12): 10 s.
  const std::vector<CallRecord> calls = {
      Call(0.5, 1.5, 0),          // warm-up only: nowhere
      Call(1.5, 2.5, 0, 2),       // sent in warm-up, arrived in the window: throughput only
      Call(3.0, 3.1, 0, 1, 1),    // both: 100 ms
      Call(4.0, 4.3, 0, 1, 2),    // both: 300 ms
      Call(5.0, 5.2, 0, 1, 2),    // both: 200 ms
      Call(11.0, 12.5, 0, 1, 2),  // sent in the window, arrived after: latency only (1500 ms)
      Call(6.0, 6.0, 14),         // UNAVAILABLE
      Call(7.0, 8.0, 4),          // DEADLINE_EXCEEDED
      Call(8.0, 9.0, 4),          // DEADLINE_EXCEEDED
      Call(12.0, 12.1, 8),        // after the window: nowhere
  };
  const LevelSummary s = Summarize(LoadMode::kRate, 5, calls, 2, 12, 3);
  EXPECT_EQ(s.mode, LoadMode::kRate);
  EXPECT_DOUBLE_EQ(s.level, 5);
  EXPECT_DOUBLE_EQ(s.window_s, 10);
  EXPECT_EQ(s.sent, 7);
  EXPECT_EQ(s.ok, 4);
  EXPECT_EQ(s.images, 5);
  EXPECT_DOUBLE_EQ(s.sent_per_s, 0.7);
  EXPECT_DOUBLE_EQ(s.requests_per_s, 0.4);
  EXPECT_DOUBLE_EQ(s.images_per_s, 0.5);
  EXPECT_EQ(s.images_in_time, 4);  // OK calls sent in the window, wherever they arrived
  EXPECT_DOUBLE_EQ(s.goodput_images_per_s, 0.4);
  EXPECT_DOUBLE_EQ(ToJson(s)["goodput_images_per_s"].get<double>(), 0.4);
  EXPECT_EQ(s.dropped, 3);
  EXPECT_EQ(s.latency_count, 4);
  EXPECT_NEAR(s.p50_ms, 250, 1e-6);  // of 100, 200, 300, 1500
  EXPECT_NEAR(s.max_ms, 1500, 1e-6);
  EXPECT_NEAR(s.mean_ms, 525, 1e-6);
  EXPECT_NEAR(s.p50_ms_1step, 100, 1e-6);
  EXPECT_NEAR(s.p50_ms_2step, 300, 1e-6);  // of 200, 300, 1500
  EXPECT_NEAR(s.server_total_p50_ms, 125, 1e-6);
  EXPECT_EQ(s.errors, (std::map<std::string, int64_t>{{"DEADLINE_EXCEEDED", 2}, {"UNAVAILABLE", 1}}));
  EXPECT_EQ(s.error_count(), 3);
}

TEST(SummarizeTest, NoSuccessGivesNoLatency) {
  const LevelSummary s = Summarize(LoadMode::kConcurrency, 2, {Call(1, 1.1, 14), Call(2, 2.1, 14)}, 0, 5, 0);
  EXPECT_EQ(s.ok, 0);
  EXPECT_TRUE(std::isnan(s.p50_ms));
  EXPECT_TRUE(std::isnan(s.p99_ms));
  const nlohmann::json j = ToJson(s);
  EXPECT_TRUE(j["latency_ms"]["p50"].is_null());
  EXPECT_EQ(j["errors"]["UNAVAILABLE"], 2);
  EXPECT_EQ(j["error_count"], 2);
  EXPECT_EQ(j["mode"], "concurrency");
  EXPECT_EQ(j["concurrency"], 2);
  const std::string row = TableRow(s);
  EXPECT_NE(row.find("UNAVAILABLE:2"), std::string::npos) << row;
}

TEST(SummarizeTest, RejectionsHaveTheirOwnLatency) {
  // Window [0, 10): four refusals (RESOURCE_EXHAUSTED) of 1, 2, 3 and 100 ms, one OK call.
  const std::vector<CallRecord> calls = {Call(1.0, 1.001, 8), Call(2.0, 2.002, 8), Call(3.0, 3.003, 8),
                                         Call(4.0, 4.1, 8), Call(5.0, 5.5, 0)};
  const LevelSummary s = Summarize(LoadMode::kRate, 1, calls, 0, 10, 0);
  EXPECT_NEAR(s.rejected_p50_ms, 2.5, 1e-6);
  EXPECT_NEAR(s.rejected_p99_ms, 3 + 0.97 * 97, 1e-6);  // between the ranks of 3 and 100 ms
  EXPECT_NEAR(s.rejected_max_ms, 100, 1e-6);
  EXPECT_NEAR(s.p50_ms, 500, 1e-6) << "refusals stay out of the OK latency";
  const nlohmann::json j = ToJson(s);
  EXPECT_EQ(j["rejected_latency_ms"]["count"], 4);
  EXPECT_NEAR(j["rejected_latency_ms"]["p99"].get<double>(), 97.09, 1e-6);

  const LevelSummary none = Summarize(LoadMode::kRate, 1, {Call(5.0, 5.5, 0)}, 0, 10, 0);
  EXPECT_TRUE(std::isnan(none.rejected_p99_ms));
  EXPECT_TRUE(ToJson(none)["rejected_latency_ms"]["p99"].is_null());
  EXPECT_EQ(ToJson(none)["rejected_latency_ms"]["count"], 0);
}

TEST(TableTest, RowsLineUpWithTheHeader) {
  const std::string header = TableHeader();
  LevelSummary a = Summarize(LoadMode::kConcurrency, 8, {Call(1, 1.25, 0)}, 0, 2, 0);
  LevelSummary b = Summarize(LoadMode::kRate, 12.5, {Call(1, 1.5, 0), Call(1.2, 1.3, 8)}, 0, 2, 1);
  const std::string ra = TableRow(a), rb = TableRow(b);
  // Every column before "errors" has a fixed width: the errors start where the header says.
  const size_t errors_at = header.find("errors");
  ASSERT_NE(errors_at, std::string::npos);
  EXPECT_EQ(ra.substr(errors_at), "0");
  EXPECT_EQ(rb.substr(errors_at), "RESOURCE_EXHAUSTED:1(p99 100.00 ms)");
  EXPECT_EQ(ra.rfind("concurrency", 0), 0u);
  EXPECT_NE(ra.find(" 250.0 "), std::string::npos) << ra;  // p50 ms
  EXPECT_EQ(rb.rfind("rate", 0), 0u);
  EXPECT_NE(rb.find(" 12.5 "), std::string::npos) << rb;
  const nlohmann::json j = ToJson(b);
  EXPECT_EQ(j["mode"], "rate");
  EXPECT_DOUBLE_EQ(j["offered_requests_per_s"].get<double>(), 12.5);
  EXPECT_EQ(j["dropped"], 1);
  EXPECT_DOUBLE_EQ(j["requests_per_s"].get<double>(), 0.5);
}

}  // namespace
TEST(RunOnThreadsTest, RunsEachIndexOnceOffTheCallingThreadAndJoins) {
  std::atomic<bool> stop{false};
  std::vector<std::atomic<int>> runs(64);
  std::atomic<int> on_caller{0};
  const std::thread::id caller = std::this_thread::get_id();
  const absl::Status status = RunOnThreads(64, stop, [&](int i) {
    ++runs[static_cast<size_t>(i)];
    if (std::this_thread::get_id() == caller) ++on_caller;
  });
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_FALSE(stop.load());
  for (const auto& r : runs) EXPECT_EQ(r.load(), 1);  // every body has finished when it returns
  EXPECT_EQ(on_caller.load(), 0);
}

}  // namespace load
}  // namespace tcm
