#include "server/pass_time_estimate.h"

#include <algorithm>

namespace tcm {

PassTimeEstimate::PassTimeEstimate(size_t max_batch_size) : seconds_(std::max<size_t>(max_batch_size, 1) + 1, 0.0) {}

void PassTimeEstimate::Observe(size_t batch_size, absl::Duration took) {
  if (batch_size < 1 || batch_size >= seconds_.size() || took <= absl::ZeroDuration()) return;
  const double seconds = absl::ToDoubleSeconds(took);
  double& mean = seconds_[batch_size];
  mean = mean == 0 ? seconds : (1 - kNewWeight) * mean + kNewWeight * seconds;
}

absl::Duration PassTimeEstimate::Estimate(size_t batch_size) const {
  const size_t n = std::clamp<size_t>(batch_size, 1, seconds_.size() - 1);
  if (seconds_[n] > 0) return absl::Seconds(seconds_[n]);
  size_t below = n, above = n;
  while (below > 0 && seconds_[below] == 0) --below;
  while (above < seconds_.size() && seconds_[above] == 0) ++above;
  const bool has_below = below > 0, has_above = above < seconds_.size();
  double seconds = 0;
  if (has_below && has_above) {
    const double f = double(n - below) / double(above - below);
    seconds = seconds_[below] + f * (seconds_[above] - seconds_[below]);
  } else if (has_below) {
    seconds = seconds_[below] * double(n) / double(below);
  } else if (has_above) {
    seconds = seconds_[above] * double(n) / double(above);
  }
  return absl::Seconds(seconds);
}

}  // namespace tcm
