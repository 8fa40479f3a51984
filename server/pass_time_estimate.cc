#include "server/pass_time_estimate.h"

#include <algorithm>
#include <cmath>

namespace tcm {

PassTimeEstimate::PassTimeEstimate(size_t max_batch_size) : sizes_(std::max<size_t>(max_batch_size, 1) + 1) {}

void PassTimeEstimate::Observe(size_t batch_size, absl::Duration took) {
  if (batch_size < 1 || batch_size >= sizes_.size() || took <= absl::ZeroDuration()) return;
  const double seconds = absl::ToDoubleSeconds(took);
  Size& s = sizes_[batch_size];
  if (s.mean == 0) {
    s.mean = seconds;
    return;
  }
  s.deviation = (1 - kNewWeight) * s.deviation + kNewWeight * std::abs(seconds - s.mean);
  s.mean = (1 - kNewWeight) * s.mean + kNewWeight * seconds;
}

absl::Duration PassTimeEstimate::Estimate(size_t batch_size) const {
  const size_t n = std::clamp<size_t>(batch_size, 1, sizes_.size() - 1);
  auto observed = [this](size_t i) { return sizes_[i].mean > 0; };
  if (observed(n)) return absl::Seconds(sizes_[n].bound());
  size_t below = n, above = n;
  while (below > 0 && !observed(below)) --below;
  while (above < sizes_.size() && !observed(above)) ++above;
  const bool has_below = below > 0, has_above = above < sizes_.size();
  double seconds = 0;
  if (has_below && has_above) {
    const double f = double(n - below) / double(above - below);
    seconds = sizes_[below].bound() + f * (sizes_[above].bound() - sizes_[below].bound());
  } else if (has_below) {
    seconds = sizes_[below].bound() * double(n) / double(below);
  } else if (has_above) {
    seconds = sizes_[above].bound() * double(n) / double(above);
  }
  return absl::Seconds(seconds);
}

}  // namespace tcm
