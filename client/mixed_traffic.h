// Mixed, misbehaving traffic for soaks and hardening tests: a seeded plan of
// calls (Generate and GenerateStream, 1 and 2 steps, cancelled at random
// moments, with deadlines shorter than their work, malformed) and a runner
// that sends them from several callers and checks that every call ended with
// a code its plan allows.
//
//   traffic::TrafficOptions options;
//   options.model = "cond";
//   options.num_classes = 10;
//   std::atomic<bool> stop{false};
//   traffic::TrafficReport report = traffic::RunTraffic(*stub, /*seed=*/7, /*callers=*/4,
//                                                       /*calls_per_caller=*/100, options, stop);
//   if (report.unexpected_count > 0) ...  // report.Summary() says what happened
#ifndef TCM_CLIENT_MIXED_TRAFFIC_H_
#define TCM_CLIENT_MIXED_TRAFFIC_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tcm/v1/tcm_service.grpc.pb.h"

namespace tcm::traffic {

// How a call's caller behaves.
enum class Behaviour {
  kComplete,               // waits for every image: OK with all of them
  kCancelAfterDelay,       // cancels after delay_ms: CANCELLED, or OK if the call finished first
  kCancelAfterFirstImage,  // streams: cancels once an image arrived; CANCELLED, or OK
  kShortDeadline,          // deadline of delay_ms: DEADLINE_EXCEEDED, or OK
  kBadRequest,             // a malformed request: exactly the planned error code, no image
};
const char* BehaviourName(Behaviour behaviour);

struct TrafficOptions {
  std::string model;                  // a served model; conditional when num_classes > 0
  int num_classes = 0;                // the model's classes (0 = unconditional)
  int max_images = 4;                 // images per call, drawn from 1..max_images
  double stream_fraction = 0.5;       // share of GenerateStream calls
  double two_step_fraction = 0.5;     // share of 2-step calls
  double misbehaving_fraction = 0.5;  // share of calls that cancel, time out or are malformed
  int max_delay_ms = 40;              // cancel delays and short deadlines, drawn from 1..max_delay_ms
  double call_timeout_s = 300;        // deadline of the calls that wait for their images
};

// One planned call.
struct CallPlan {
  v1::GenerateRequest request;
  bool stream = false;
  Behaviour behaviour = Behaviour::kComplete;
  int delay_ms = 0;                                          // cancel delay or deadline
  grpc::StatusCode bad_request_code = grpc::StatusCode::OK;  // kBadRequest: the code it must get
};

// Call `n` of caller `caller`: a function of (seed, caller, n, options) alone,
// so that a failure replays from the printed seed.
CallPlan PlanCall(uint64_t seed, int caller, uint64_t n, const TrafficOptions& options);

// Empty when a call planned as `plan` may end with `code` after delivering
// `images` complete images (GenerateStream: messages read; Generate: images in
// the response, checked before counting); else what is wrong.
std::string CheckOutcome(const CallPlan& plan, grpc::StatusCode code, int images);

// What a run of traffic did.
struct TrafficReport {
  int64_t calls = 0;
  int64_t images_received = 0;
  // "<Generate|GenerateStream> <behaviour> <CODE>" -> calls.
  std::map<std::string, int64_t> outcomes;
  std::map<std::string, int64_t> codes;  // "<CODE>" -> calls, over all kinds
  int64_t unexpected_count = 0;
  std::vector<std::string> unexpected;  // the first few, each with its caller and call number

  void Merge(const TrafficReport& other);
  // Calls that ended with the code `name` ("OK", "CANCELLED", ...), over all kinds.
  int64_t CallsWithCode(const std::string& name) const {
    auto it = codes.find(name);
    return it == codes.end() ? 0 : it->second;
  }
  // A few lines: totals, one line per outcome, the first unexpected calls.
  std::string Summary() const;
};

// Runs `callers` threads against `stub`; each sends its planned calls one
// after another, until `stop` is set or it has sent `calls_per_caller` (0 =
// no limit). Returns when every caller has finished its last call.
TrafficReport RunTraffic(v1::TcmService::Stub& stub, uint64_t seed, int callers, int64_t calls_per_caller,
                         const TrafficOptions& options, const std::atomic<bool>& stop);

}  // namespace tcm::traffic

#endif  // TCM_CLIENT_MIXED_TRAFFIC_H_
