#include <catch2/catch.hpp>

#include "admin/admin_history.h"

using cg::Histogram;
using cg::histogram_quantile;

TEST_CASE("histogram_quantile interpolates within a bucket as Prometheus does", "[admin]") {
  std::array<uint64_t, Histogram::kBounds.size()> b{};
  CHECK(histogram_quantile(0.5, b, 0) == -1);  // nothing observed
  // 100 observations, all in (0.1, 0.25]: cumulative counts from that bucket on.
  for (size_t i = 0; i < b.size(); ++i) b[i] = Histogram::kBounds[i] >= 0.25 ? 100 : 0;
  CHECK(histogram_quantile(0.5, b, 100) == Approx(0.175));
  CHECK(histogram_quantile(0.99, b, 100) == Approx(0.1 + 0.15 * 0.99));
  // Half at or below 1 ms, half in (1, 2.5] s.
  for (size_t i = 0; i < b.size(); ++i) b[i] = Histogram::kBounds[i] >= 2.5 ? 100 : 50;
  CHECK(histogram_quantile(0.5, b, 100) == Approx(0.001));
  CHECK(histogram_quantile(0.95, b, 100) == Approx(1 + 1.5 * 0.9));
  // Beyond the largest bound: the largest bound.
  b.fill(0);
  CHECK(histogram_quantile(0.5, b, 10) == Histogram::kBounds.back());
}
