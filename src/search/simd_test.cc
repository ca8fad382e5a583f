#include "search/simd.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace nearlabel {
namespace {

TEST(Half, ExactValuesSurviveTheRoundTrip) {
  // Values a half holds exactly: zero, powers of two, the largest normal, a subnormal.
  const std::vector<float> exact = {0.0f, -0.0f,    1.0f,        -2.0f,
                                    0.5f, 65504.0f, 1.0f / 1024, 5.9604644775390625e-8f};
  std::vector<uint16_t> h(exact.size());
  std::vector<float> back(exact.size());
  FloatToHalf(exact.data(), h.data(), exact.size());
  HalfToFloat(h.data(), back.data(), exact.size());
  for (size_t i = 0; i < exact.size(); ++i) EXPECT_EQ(back[i], exact[i]) << i;
  EXPECT_EQ(h[2], 0x3c00);  // 1.0 in IEEE binary16
  EXPECT_EQ(h[1], 0x8000);  // -0 keeps its sign
}

TEST(Half, RoundsToNearestAndSaturatesToInfinity) {
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties go to the even mantissa (1.0).
  const std::vector<float> in = {1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048, 1e6f, -1e6f};
  std::vector<uint16_t> h(in.size());
  FloatToHalf(in.data(), h.data(), in.size());
  EXPECT_EQ(h[0], 0x3c00);
  EXPECT_EQ(h[1], 0x3c02);
  EXPECT_EQ(h[2], 0x7c00);
  EXPECT_EQ(h[3], 0xfc00);
}

TEST(Half, DotProductsOfUnitVectorsAreCloseToFloat) {
  // Lengths with and without a tail after the 16- and 32-wide blocks.
  std::mt19937 rng(3);
  std::normal_distribution<float> g;
  for (size_t d : {1u, 7u, 16u, 33u, 128u, 1024u}) {
    std::vector<float> a(d), b(d);
    for (auto& x : a) x = g(rng);
    for (auto& x : b) x = g(rng);
    auto unit = [](std::vector<float>& v) {
      float n = 0;
      for (float x : v) n += x * x;
      for (float& x : v) x /= std::sqrt(n);
    };
    unit(a);
    unit(b);
    std::vector<uint16_t> ha(d), hb(d);
    FloatToHalf(a.data(), ha.data(), d);
    FloatToHalf(b.data(), hb.data(), d);
    const float exact = InnerProduct(a.data(), b.data(), d);
    EXPECT_NEAR(InnerProductHalf(a.data(), hb.data(), d), exact, 2e-3) << d;
    EXPECT_NEAR(InnerProductHalfHalf(ha.data(), hb.data(), d), exact, 2e-3) << d;
    EXPECT_NEAR(InnerProductHalf(a.data(), ha.data(), d), 1.0f, 2e-3) << d;
  }
}

// DotRows/DotRowsHalf give each row's InnerProduct, with row counts that leave a partial
// step of four and dims that leave a tail after the 16-wide blocks.
TEST(DotRows, EveryRowGetsItsInnerProduct) {
  std::mt19937 rng(5);
  std::normal_distribution<float> g;
  for (size_t d : {3u, 16u, 37u, 256u}) {
    const size_t n = 11;
    std::vector<float> rows(n * d), q(d), out(n), out_half(n);
    for (auto& x : rows) x = g(rng);
    for (auto& x : q) x = g(rng);
    std::vector<uint16_t> half(n * d);
    FloatToHalf(rows.data(), half.data(), n * d);
    DotRows(rows.data(), n, d, q.data(), out.data());
    DotRowsHalf(half.data(), n, d, q.data(), out_half.data());
    for (size_t r = 0; r < n; ++r) {
      const float want = InnerProduct(q.data(), rows.data() + r * d, d);
      EXPECT_NEAR(out[r], want, 1e-4f * std::sqrt(static_cast<float>(d))) << d << " " << r;
      EXPECT_NEAR(out_half[r], InnerProductHalf(q.data(), half.data() + r * d, d),
                  1e-4f * std::sqrt(static_cast<float>(d)))
          << d << " " << r;
    }
  }
}

// AnyAtLeast/AnyAtLeastEach find a single value at the bound in any position of any length
// (whole 16-lane blocks and every tail), and nothing when all are below or NaN.
TEST(AnyAtLeast, FindsOneValueAtTheBoundAnywhere) {
  for (size_t n = 0; n <= 40; ++n) {
    std::vector<float> s(n, 0.25f), bounds(n, 0.5f);
    if (n > 0) s[n / 2] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_FALSE(AnyAtLeast(s.data(), n, 0.5f)) << n;
    EXPECT_FALSE(AnyAtLeastEach(s.data(), bounds.data(), n)) << n;
    for (size_t at = 0; at < n; ++at) {
      std::vector<float> t(n, 0.25f);
      t[at] = 0.5f;
      EXPECT_TRUE(AnyAtLeast(t.data(), n, 0.5f)) << n << " " << at;
      EXPECT_TRUE(AnyAtLeastEach(t.data(), bounds.data(), n)) << n << " " << at;
      EXPECT_FALSE(AnyAtLeast(t.data(), n, 0.5001f)) << n << " " << at;
    }
  }
}

}  // namespace
}  // namespace nearlabel
