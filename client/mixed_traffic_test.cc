#include "client/mixed_traffic.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

namespace tcm::traffic {
namespace {

using grpc::StatusCode;

TrafficOptions Conditional() {
  TrafficOptions options;
  options.model = "cond";
  options.num_classes = 10;
  options.max_images = 4;
  return options;
}

TEST(MixedTrafficPlanTest, APlanIsAFunctionOfSeedCallerAndCallNumber) {
  const TrafficOptions options = Conditional();
  for (uint64_t n = 0; n < 50; ++n) {
    const CallPlan a = PlanCall(7, 2, n, options), b = PlanCall(7, 2, n, options);
    EXPECT_EQ(a.request.SerializeAsString(), b.request.SerializeAsString());
    EXPECT_EQ(a.behaviour, b.behaviour);
    EXPECT_EQ(a.stream, b.stream);
    EXPECT_EQ(a.delay_ms, b.delay_ms);
  }
  int differ = 0;
  for (uint64_t n = 0; n < 50; ++n)
    differ += PlanCall(7, 2, n, options).request.seed() != PlanCall(8, 2, n, options).request.seed();
  EXPECT_EQ(differ, 50) << "another seed plans other calls";
}

TEST(MixedTrafficPlanTest, TheMixHoldsEveryKindWithinTheOptions) {
  const TrafficOptions options = Conditional();
  std::map<std::pair<bool, Behaviour>, int> kinds;
  std::set<StatusCode> bad_codes;
  std::set<uint32_t> steps, images;
  int previews = 0;
  for (int caller = 0; caller < 4; ++caller) {
    for (uint64_t n = 0; n < 500; ++n) {
      const CallPlan plan = PlanCall(1, caller, n, options);
      ++kinds[{plan.stream, plan.behaviour}];
      EXPECT_GE(plan.delay_ms, 1);
      EXPECT_LE(plan.delay_ms, options.max_delay_ms);
      if (plan.behaviour == Behaviour::kBadRequest) {
        bad_codes.insert(plan.bad_request_code);
        continue;
      }
      EXPECT_EQ(plan.request.model(), "cond");
      steps.insert(plan.request.steps());
      images.insert(plan.request.num_images());
      if (plan.request.has_class_label()) {
        EXPECT_GE(plan.request.class_label(), 0);
        EXPECT_LT(plan.request.class_label(), 10);
      }
      EXPECT_FALSE(!plan.stream && plan.behaviour == Behaviour::kCancelAfterFirstImage);
      if (plan.request.preview()) {
        ++previews;
        EXPECT_TRUE(plan.stream && plan.request.steps() == 2) << "previews only on 2-step streams";
      }
    }
  }
  EXPECT_GT(previews, 0);
  for (bool stream : {false, true})
    for (Behaviour b :
         {Behaviour::kComplete, Behaviour::kCancelAfterDelay, Behaviour::kShortDeadline, Behaviour::kBadRequest})
      EXPECT_GT((kinds[{stream, b}]), 0) << (stream ? "stream " : "unary ") << BehaviourName(b);
  EXPECT_GT((kinds[{true, Behaviour::kCancelAfterFirstImage}]), 0);
  EXPECT_EQ(steps, (std::set<uint32_t>{1, 2}));
  EXPECT_EQ(images, (std::set<uint32_t>{1, 2, 3, 4}));
  EXPECT_EQ(bad_codes, (std::set<StatusCode>{StatusCode::NOT_FOUND, StatusCode::INVALID_ARGUMENT}));
}

TEST(MixedTrafficPlanTest, WellBehavedOnlyWhenNoMisbehaviourIsAsked) {
  TrafficOptions options = Conditional();
  options.misbehaving_fraction = 0;
  options.stream_fraction = 0;
  for (uint64_t n = 0; n < 200; ++n) {
    const CallPlan plan = PlanCall(3, 0, n, options);
    EXPECT_EQ(plan.behaviour, Behaviour::kComplete);
    EXPECT_FALSE(plan.stream);
  }
}

TEST(MixedTrafficPlanTest, UnconditionalModelsGetNoClassLabel) {
  TrafficOptions options;
  options.model = "uncond";
  options.misbehaving_fraction = 1;
  for (uint64_t n = 0; n < 300; ++n) {
    const CallPlan plan = PlanCall(5, 1, n, options);
    EXPECT_FALSE(plan.request.has_class_label()) << "call " << n;
  }
}

CallPlan Plan(Behaviour behaviour, bool stream, uint32_t images) {
  CallPlan plan;
  plan.behaviour = behaviour;
  plan.stream = stream;
  plan.request.set_num_images(images);
  return plan;
}

TEST(MixedTrafficOutcomeTest, EachKindAllowsOnlyItsCodes) {
  // Complete calls: OK with every image, nothing else.
  EXPECT_EQ(CheckOutcome(Plan(Behaviour::kComplete, false, 3), StatusCode::OK, 3), "");
  EXPECT_NE(CheckOutcome(Plan(Behaviour::kComplete, false, 3), StatusCode::OK, 2), "");
  EXPECT_NE(CheckOutcome(Plan(Behaviour::kComplete, true, 3), StatusCode::CANCELLED, 1), "");
  EXPECT_NE(CheckOutcome(Plan(Behaviour::kComplete, false, 3), StatusCode::RESOURCE_EXHAUSTED, 0), "");
  // Cancelled calls: CANCELLED (streams after some images), or OK in full.
  EXPECT_EQ(CheckOutcome(Plan(Behaviour::kCancelAfterDelay, true, 3), StatusCode::CANCELLED, 2), "");
  EXPECT_EQ(CheckOutcome(Plan(Behaviour::kCancelAfterDelay, false, 3), StatusCode::OK, 3), "");
  EXPECT_NE(CheckOutcome(Plan(Behaviour::kCancelAfterDelay, false, 3), StatusCode::CANCELLED, 1), "");
  EXPECT_NE(CheckOutcome(Plan(Behaviour::kCancelAfterDelay, true, 3), StatusCode::DEADLINE_EXCEEDED, 0), "");
  EXPECT_EQ(CheckOutcome(Plan(Behaviour::kCancelAfterFirstImage, true, 2), StatusCode::CANCELLED, 1), "");
  EXPECT_NE(CheckOutcome(Plan(Behaviour::kCancelAfterFirstImage, true, 2), StatusCode::CANCELLED, 3), "");
  // Short deadlines: DEADLINE_EXCEEDED or OK in full.
  EXPECT_EQ(CheckOutcome(Plan(Behaviour::kShortDeadline, false, 1), StatusCode::DEADLINE_EXCEEDED, 0), "");
  EXPECT_NE(CheckOutcome(Plan(Behaviour::kShortDeadline, false, 1), StatusCode::CANCELLED, 0), "");
  EXPECT_NE(CheckOutcome(Plan(Behaviour::kShortDeadline, true, 1), StatusCode::INTERNAL, 0), "");
  // Malformed requests: exactly the planned code, no image.
  CallPlan bad = Plan(Behaviour::kBadRequest, false, 1);
  bad.bad_request_code = StatusCode::NOT_FOUND;
  EXPECT_EQ(CheckOutcome(bad, StatusCode::NOT_FOUND, 0), "");
  EXPECT_NE(CheckOutcome(bad, StatusCode::INVALID_ARGUMENT, 0), "");
  EXPECT_NE(CheckOutcome(bad, StatusCode::OK, 1), "");
}

TEST(MixedTrafficReportTest, CountsCodesOverAllKindsAndMerges) {
  TrafficReport a, b;
  a.calls = 3;
  a.outcomes = {{"Generate complete OK", 2}, {"GenerateStream cancel_after_delay CANCELLED", 1}};
  a.codes = {{"OK", 2}, {"CANCELLED", 1}};
  b.calls = 2;
  b.outcomes = {{"GenerateStream complete OK", 1}, {"Generate bad_request NOT_FOUND", 1}};
  b.codes = {{"OK", 1}, {"NOT_FOUND", 1}};
  b.unexpected_count = 1;
  b.unexpected = {"caller 1 call 0: unexpected"};
  a.Merge(b);
  EXPECT_EQ(a.calls, 5);
  EXPECT_EQ(a.CallsWithCode("OK"), 3);
  EXPECT_EQ(a.CallsWithCode("CANCELLED"), 1);
  EXPECT_EQ(a.CallsWithCode("NOT_FOUND"), 1);
  EXPECT_EQ(a.CallsWithCode("FOUND"), 0);
  EXPECT_EQ(a.unexpected_count, 1);
  EXPECT_NE(a.Summary().find("UNEXPECTED caller 1 call 0"), std::string::npos);
}

}  // namespace
}  // namespace tcm::traffic
