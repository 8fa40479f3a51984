// How long one forward pass of a model takes, by batch size: learned from the
// passes the workers time (at warm-up and while serving), so that the batcher
// can tell which queued images can still meet their call's deadline.
//
// Each batch size observed keeps exponentially weighted means of its pass
// times and of their absolute deviation from the mean; the estimate is a
// time a pass rarely exceeds, the mean plus kDeviations deviations. (Under
// overload the images served are those with the least time to spare: judged
// by the mean alone, about half of them would finish just too late.) A size
// not observed yet is interpolated linearly between the nearest observed
// sizes below and above; above the largest observed size the time grows in
// proportion to the size, below the smallest it shrinks in proportion.
// Nothing observed: no estimate (Estimate returns zero).
//
// Not thread-safe: the batcher guards it with its lock. Torch-free.
#ifndef TCM_SERVER_PASS_TIME_ESTIMATE_H_
#define TCM_SERVER_PASS_TIME_ESTIMATE_H_

#include <cstddef>
#include <vector>

#include "absl/time/time.h"

namespace tcm {

class PassTimeEstimate {
 public:
  // Weight of the newest observation in a size's means.
  static constexpr double kNewWeight = 0.25;
  // Mean absolute deviations added to the mean (about the 99th percentile
  // for normally distributed times).
  static constexpr double kDeviations = 3;

  // Batch sizes 1..max_batch_size (at least 1).
  explicit PassTimeEstimate(size_t max_batch_size);

  // A pass of `batch_size` images took `took`. Sizes outside 1..max and
  // non-positive times are ignored.
  void Observe(size_t batch_size, absl::Duration took);

  // A time a pass of `batch_size` images (clamped to 1..max) rarely
  // exceeds; zero while nothing has been observed.
  absl::Duration Estimate(size_t batch_size) const;

 private:
  struct Size {
    double mean = 0;       // seconds; 0 = not observed
    double deviation = 0;  // seconds
    double bound() const { return mean + kDeviations * deviation; }
  };
  std::vector<Size> sizes_;  // index = batch size
};

}  // namespace tcm

#endif  // TCM_SERVER_PASS_TIME_ESTIMATE_H_
