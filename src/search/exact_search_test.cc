#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "nearlabel/search.h"
#include "search/bf16_gemm.h"

namespace nearlabel {
namespace {

VectorTable RandomTable(size_t n, int d, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g;
  VectorTable t;
  t.dims = d;
  t.vectors.resize(n * d);
  for (size_t i = 0; i < n; ++i) {
    t.ids.push_back(static_cast<int64_t>(i) + 1);
    double s = 0;
    float* v = t.vectors.data() + i * d;
    for (int j = 0; j < d; ++j) {
      v[j] = g(rng);
      s += v[j] * v[j];
    }
    for (int j = 0; j < d; ++j) v[j] /= static_cast<float>(std::sqrt(s));
  }
  return t;
}

// Naive reference: all distances, sorted.
std::vector<size_t> Naive(const VectorTable& t, const float* q, size_t k, size_t skip = SIZE_MAX) {
  std::vector<std::pair<double, size_t>> all;
  for (size_t i = 0; i < t.size(); ++i) {
    if (i == skip) continue;
    double dot = 0;
    for (int j = 0; j < t.dims; ++j) dot += t.row(i)[j] * q[j];
    all.emplace_back(1 - dot, i);
  }
  std::sort(all.begin(), all.end());
  std::vector<size_t> out;
  for (size_t i = 0; i < std::min(k, all.size()); ++i) out.push_back(all[i].second);
  return out;
}

TEST(ExactSearchTest, MatchesNaiveTopK) {
  VectorTable t = RandomTable(500, 24, 7);
  VectorTable q = RandomTable(5, 24, 8);
  for (size_t qi = 0; qi < q.size(); ++qi) {
    SearchParams p;
    p.k = 10;
    auto got = ExactSearch(t, q.row(qi), p);
    ASSERT_EQ(got.size(), 10u);
    auto want = Naive(t, q.row(qi), 10);
    for (size_t i = 0; i < 10; ++i) EXPECT_EQ(got[i].row, want[i]);
    EXPECT_TRUE(std::is_sorted(got.begin(), got.end(),
                               [](auto& a, auto& b) { return a.distance < b.distance; }));
  }
}

TEST(ExactSearchTest, FilterReturnsOnlyAllowedRowsAndKWhenPossible) {
  VectorTable t = RandomTable(100, 8, 3);
  SearchParams p;
  p.k = 5;
  p.allowed.assign(100, 0);
  for (size_t i = 0; i < 100; i += 10) p.allowed[i] = 1;
  auto got = ExactSearch(t, t.row(3), p);
  ASSERT_EQ(got.size(), 5u);
  for (auto& n : got) EXPECT_EQ(n.row % 10, 0u);
  p.k = 50;
  EXPECT_EQ(ExactSearch(t, t.row(3), p).size(), 10u);  // only 10 rows allowed
}

TEST(ExactSearchTest, LeaveOneOutMatchesNaiveWithPartitionsAndGroups) {
  VectorTable t = RandomTable(300, 16, 11);
  std::vector<int> part(300), group(300);
  for (int i = 0; i < 300; ++i) {
    part[i] = i % 3;
    group[i] = (i / 3) % 7;
  }
  // Tiles of 32 rows: diagonal and off-diagonal tiles, both sides of the symmetric product.
  auto got = LeaveOneOutNeighbors(t, 3, part, group, 32);
  for (size_t i = 0; i < 300; i += 1) {
    // Naive: same partition, different group, not itself.
    std::vector<std::pair<double, size_t>> all;
    for (size_t j = 0; j < 300; ++j) {
      if (j == i || part[j] != part[i] || group[j] == group[i]) continue;
      double dot = 0;
      for (int c = 0; c < 16; ++c) dot += t.row(i)[c] * t.row(j)[c];
      all.emplace_back(1 - dot, j);
    }
    std::sort(all.begin(), all.end());
    ASSERT_EQ(got[i].size(), 3u);
    for (size_t r = 0; r < 3; ++r) {
      EXPECT_EQ(got[i][r].row, all[r].second) << "row " << i;
      EXPECT_NEAR(got[i][r].distance, all[r].first, 1e-5);
    }
  }
  auto plain = LeaveOneOutNeighbors(t, 1, {}, {}, 64);
  for (size_t i = 0; i < 300; ++i) EXPECT_EQ(plain[i][0].row, Naive(t, t.row(i), 1, i)[0]);
}

TEST(ExactSearchTest, BatchEqualsOneQueryAtATime) {
  VectorTable t = RandomTable(5000, 32, 21);  // more rows than one 4096-row block
  VectorTable q = RandomTable(70, 32, 22);
  SearchParams p;
  p.k = 7;
  p.allowed.assign(t.size(), 1);
  for (size_t i = 0; i < t.size(); i += 3) p.allowed[i] = 0;
  auto batch = ExactSearchBatch(t, q.vectors.data(), q.size(), p);
  ASSERT_EQ(batch.size(), q.size());
  for (size_t i = 0; i < q.size(); ++i) {
    auto one = ExactSearch(t, q.row(i), p);
    ASSERT_EQ(batch[i].size(), one.size());
    for (size_t r = 0; r < one.size(); ++r) {
      EXPECT_EQ(batch[i][r].row, one[r].row) << "query " << i << " rank " << r;
      EXPECT_NEAR(batch[i][r].distance, one[r].distance, 1e-5);
    }
  }
}

// The AMX path (bf16 candidates, float32 re-rank) must give the float32 path's neighbours,
// also on clustered data where hundreds of rows sit within the bf16 error of the k-th best,
// with dims and counts that are not multiples of the tile sizes, and with a filter.
TEST(ExactSearchTest, Bf16CandidatesGiveTheFloat32Neighbours) {
  if (!AmxBf16Available()) GTEST_SKIP() << "no AMX-BF16 on this CPU: only the float32 path runs";
  const int d = 100;
  VectorTable t = RandomTable(4100, d, 31);
  VectorTable centres = RandomTable(8, d, 32);
  for (size_t i = 0; i < t.size(); ++i) {  // 8 tight clusters: near ties everywhere
    float* v = t.vectors.data() + i * d;
    const float* c = centres.row(i % 8);
    double norm = 0;
    for (int j = 0; j < d; ++j) {
      v[j] = c[j] + 0.02f * v[j];
      norm += static_cast<double>(v[j]) * v[j];
    }
    for (int j = 0; j < d; ++j) v[j] = static_cast<float>(v[j] / std::sqrt(norm));
  }
  VectorTable q = RandomTable(45, d, 33);
  for (size_t i = 0; i < q.size(); ++i) {  // queries near the clusters too
    std::copy(t.row(i * 13), t.row(i * 13) + d, q.vectors.data() + i * d);
    q.vectors[i * d] += 0.001f;
  }
  for (bool filter : {false, true}) {
    SearchParams fast, slow;
    fast.k = slow.k = 10;
    slow.bf16_candidates = false;
    if (filter) {
      fast.allowed.assign(t.size(), 1);
      for (size_t i = 0; i < t.size(); i += 2) fast.allowed[i] = 0;
      slow.allowed = fast.allowed;
    }
    auto a = ExactSearchBatch(t, q.vectors.data(), q.size(), fast);
    auto b = ExactSearchBatch(t, q.vectors.data(), q.size(), slow);
    for (size_t i = 0; i < q.size(); ++i) {
      ASSERT_EQ(a[i].size(), b[i].size());
      // Same rows, and rank by rank the same distance up to float32 rounding (the re-rank's dot
      // product sums in another order than sgemm, so rows that tie within it may swap places;
      // a row only one side has must tie with the other side's k-th).
      std::set<size_t> rows_b;
      for (const auto& nb : b[i]) rows_b.insert(nb.row);
      for (const auto& nb : a[i]) {
        if (!rows_b.count(nb.row)) {
          EXPECT_NEAR(nb.distance, b[i].back().distance, 2e-6)
              << "query " << i << " row " << nb.row;
        }
      }
      for (size_t r = 0; r < a[i].size(); ++r) {
        EXPECT_NEAR(a[i][r].distance, b[i][r].distance, 2e-6) << "query " << i << " rank " << r;
      }
    }
  }
}

}  // namespace
}  // namespace nearlabel
