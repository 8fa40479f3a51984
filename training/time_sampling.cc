#include "training/time_sampling.h"

#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace tcm {
namespace {

// Regularised incomplete beta I_x(a, b) by its continued fraction (modified
// Lentz), using the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) where it converges slowly.
double IncompleteBetaFraction(double x, double a, double b) {
  constexpr double kTiny = 1e-300, kEps = 1e-15;
  double c = 1.0, d = 1.0 - (a + b) * x / (a + 1.0);
  if (std::fabs(d) < kTiny) d = kTiny;
  d = 1.0 / d;
  double h = d;
  for (int m = 1; m <= 500; ++m) {
    const double m2 = 2.0 * m;
    double num = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2));
    d = 1.0 + num * d;
    c = 1.0 + num / c;
    if (std::fabs(d) < kTiny) d = kTiny;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1.0 / d;
    h *= d * c;
    num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0));
    d = 1.0 + num * d;
    c = 1.0 + num / c;
    if (std::fabs(d) < kTiny) d = kTiny;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1.0 / d;
    const double delta = d * c;
    h *= delta;
    if (std::fabs(delta - 1.0) < kEps) break;
  }
  return h;
}

double RegularizedIncompleteBeta(double x, double a, double b) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const double log_front = std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x);
  if (x < (a + 1.0) / (a + b + 2.0)) return std::exp(log_front) * IncompleteBetaFraction(x, a, b) / a;
  return 1.0 - std::exp(log_front) * IncompleteBetaFraction(1.0 - x, b, a) / b;
}

// x in [lo, hi] with cdf(x) = u, by bisection (cdf increasing).
double InvertCdf(const std::function<double(double)>& cdf, double u, double lo, double hi) {
  for (int i = 0; i < 200 && hi - lo > 1e-12 * std::max(1.0, std::fabs(lo) + std::fabs(hi)); ++i) {
    const double mid = 0.5 * (lo + hi);
    (cdf(mid) < u ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

}  // namespace

torch::Tensor CpuGeneratorState() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void SetCpuGeneratorState(const torch::Tensor& state) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

absl::StatusOr<TimeDistribution::Kind> ParseTimeDistributionKind(const std::string& name, const std::string& flag) {
  if (name == "normal") return TimeDistribution::Kind::kNormal;
  if (name == "t") return TimeDistribution::Kind::kStudentT;
  return absl::InvalidArgumentError(absl::StrCat(flag, ": must be \"normal\" or \"t\", got \"", name, "\""));
}

double NormalCdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

double StudentTCdf(double x, double df) {
  const double tail = 0.5 * RegularizedIncompleteBeta(df / (df + x * x), 0.5 * df, 0.5);
  return x > 0 ? 1.0 - tail : tail;
}

torch::Tensor SampleTimes(int64_t n, const TimeDistribution& dist) {
  const bool t_dist = dist.kind == TimeDistribution::Kind::kStudentT;
  auto cdf = [&](double z) { return t_dist ? StudentTCdf(z, dist.df) : NormalCdf(z); };
  const double lo = (std::log(dist.t_lower) - dist.mean) / dist.std;
  const double hi = (std::log(dist.t_upper) - dist.mean) / dist.std;
  const double a = cdf(lo), b = cdf(hi);
  const torch::Tensor u = torch::rand({n}, torch::kFloat64);
  const double* pu = u.data_ptr<double>();
  torch::Tensor t = torch::empty({n}, torch::kFloat64);
  double* pt = t.data_ptr<double>();
  for (int64_t i = 0; i < n; ++i) {
    const double z = InvertCdf(cdf, a + (b - a) * pu[i], lo, hi);
    pt[i] = std::exp(z * dist.std + dist.mean);
  }
  return t.to(torch::kFloat32);
}

torch::Tensor SampleLogNormalTimes(int64_t n, double p_mean, double p_std) {
  return (torch::randn({n}) * p_std + p_mean).exp();
}

torch::Tensor DeltaSigmoid(const torch::Tensor& t, double ratio) {
  const torch::Tensor dt = t * (1 - ratio) * (1 + 8 * torch::sigmoid(-t));
  const torch::Tensor r = (t - dt).clamp_min(1e-6);
  return t - r;
}

double ScheduleRatio(int64_t stage, double q, double ratio_limit) {
  return std::min(1.0 - 1.0 / std::pow(q, double(stage + 1)), ratio_limit);
}

torch::Tensor BoundaryMask(int64_t n, double prob) {
  const int64_t count = static_cast<int64_t>(double(n) * prob);
  torch::Tensor mask = torch::zeros({n}, torch::kBool);
  if (count > 0) mask.index_fill_(0, torch::randperm(n).slice(0, 0, count), true);
  return mask;
}

}  // namespace tcm
