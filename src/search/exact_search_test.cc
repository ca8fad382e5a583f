#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "nearlabel/search.h"
#include "search/bf16_gemm.h"
#include "search/bf16_search.h"
#include "search/simd.h"

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

// Tight clusters, where hundreds of rows sit within the bf16 error of the k-th best.
VectorTable ClusteredTable(size_t n, int d, unsigned seed) {
  VectorTable t = RandomTable(n, d, seed);
  VectorTable centres = RandomTable(8, d, seed + 1);
  for (size_t i = 0; i < t.size(); ++i) {
    float* v = t.vectors.data() + i * d;
    const float* c = centres.row(i % 8);
    double norm = 0;
    for (int j = 0; j < d; ++j) {
      v[j] = c[j] + 0.02f * v[j];
      norm += static_cast<double>(v[j]) * v[j];
    }
    for (int j = 0; j < d; ++j) v[j] = static_cast<float>(v[j] / std::sqrt(norm));
  }
  return t;
}

// Queries near the clusters: rows of t, nudged.
VectorTable NearbyQueries(const VectorTable& t, size_t nq) {
  VectorTable q = RandomTable(nq, t.dims, 33);
  for (size_t i = 0; i < q.size(); ++i) {
    std::copy(t.row(i * 13), t.row(i * 13) + t.dims, q.vectors.data() + i * t.dims);
    q.vectors[i * t.dims] += 0.001f;
  }
  return q;
}

// Same rows, and rank by rank the same distance up to float32 rounding (the re-rank's dot
// product sums in another order than sgemm, so rows that tie within it may swap places; a row
// only one side has must tie with the other side's k-th). Returns the number of lists that
// differ beyond that.
size_t ListsDiffering(const std::vector<std::vector<Neighbor>>& a,
                      const std::vector<std::vector<Neighbor>>& b) {
  size_t differing = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    bool same = a[i].size() == b[i].size();
    std::set<size_t> rows_b;
    for (const auto& nb : b[i]) rows_b.insert(nb.row);
    for (size_t r = 0; same && r < a[i].size(); ++r) {
      if (!rows_b.count(a[i][r].row) && std::fabs(a[i][r].distance - b[i].back().distance) > 2e-6)
        same = false;
      if (std::fabs(a[i][r].distance - b[i][r].distance) > 2e-6) same = false;
    }
    differing += !same;
  }
  return differing;
}

// Every bf16 kernel this CPU can run, the emulated one always: the margin logic is exercised
// on every machine, the instructions wherever they exist.
std::vector<Bf16Kernel> KernelsHere() {
  std::vector<Bf16Kernel> kernels = {Bf16Kernel::kEmulated};
  for (Bf16Kernel k : {Bf16Kernel::kAvx512Bf16, Bf16Kernel::kAmx}) {
    if (Bf16KernelAvailable(k)) kernels.push_back(k);
  }
  return kernels;
}

// The bf16 path (candidates, float32 re-rank) must give the float32 path's neighbours, also on
// clustered data, with dims and counts that are not multiples of the tile sizes, and with a
// filter; with the margin set to 0 it must not (else this test could not catch a bad margin).
TEST(ExactSearchTest, Bf16CandidatesGiveTheFloat32NeighboursOnEveryKernel) {
  const VectorTable t = ClusteredTable(4100, 100, 31);
  const VectorTable q = NearbyQueries(t, 45);
  for (Bf16Kernel kernel : KernelsHere()) {
    for (bool filter : {false, true}) {
      SearchParams p;
      p.k = 10;
      p.bf16_candidates = false;
      if (filter) {
        p.allowed.assign(t.size(), 1);
        for (size_t i = 0; i < t.size(); i += 2) p.allowed[i] = 0;
      }
      const auto want = ExactSearchBatch(t, q.vectors.data(), q.size(), p);
      const auto got = ExactSearchBatchBf16(t, q.vectors.data(), q.size(), p, kernel);
      EXPECT_EQ(ListsDiffering(got, want), 0u)
          << Bf16KernelName(kernel) << (filter ? ", filtered" : "");
      if (kernel == Bf16Kernel::kEmulated && !filter) {
        const auto no_margin = ExactSearchBatchBf16(t, q.vectors.data(), q.size(), p, kernel, 0);
        EXPECT_GT(ListsDiffering(no_margin, want), 0u) << "a margin of 0 lost no neighbour";
      }
    }
  }
}

// Leave-one-out on bf16 candidates: the float32 path's neighbours on every kernel, with
// partitions, groups and tiles that are not multiples of 32 (rounded to 96 rows here).
TEST(ExactSearchTest, LeaveOneOutBf16GivesTheFloat32NeighboursOnEveryKernel) {
  const VectorTable t = ClusteredTable(700, 40, 41);
  std::vector<int> part(t.size()), group(t.size());
  for (size_t i = 0; i < t.size(); ++i) {
    part[i] = i < 450 ? 0 : 1;
    group[i] = static_cast<int>(i / 8) % 11;
  }
  const auto want = LeaveOneOutNeighbors(t, 3, part, group, 100, false);
  for (Bf16Kernel kernel : KernelsHere()) {
    const auto got = LeaveOneOutNeighborsBf16(t, 3, part, group, kernel, 1, 100);
    EXPECT_EQ(ListsDiffering(got, want), 0u) << Bf16KernelName(kernel);
    for (size_t i = 0; i < t.size(); ++i) {
      for (const Neighbor& nb : got[i]) {
        ASSERT_EQ(part[nb.row], part[i]);
        ASSERT_NE(group[nb.row], group[i]);
      }
    }
  }
  const auto plain = LeaveOneOutNeighbors(t, 1, {}, {}, 4096, false);
  const auto no_margin = LeaveOneOutNeighborsBf16(t, 1, {}, {}, Bf16Kernel::kEmulated, 0);
  EXPECT_GT(ListsDiffering(no_margin, plain), 0u) << "a margin of 0 lost no neighbour";
}

}  // namespace
}  // namespace nearlabel

namespace nearlabel {
namespace {

// The half-precision scan copy: candidates from halves, re-ranked from the float32 rows, so
// the neighbours and distances are the float32 scan's, on clustered data and with a filter,
// with a row count that leaves a partial chunk and dims that leave a vector tail.
TEST(ExactSearchTest, HalfCopyGivesTheFloat32Neighbours) {
  const VectorTable t = ClusteredTable(9001, 37, 51);
  const VectorTable q = NearbyQueries(t, 30);
  const MatrixView rows{t.vectors.data(), t.size(), t.dims};
  const HalfRows half = MakeHalfRows(rows);
  EXPECT_GT(half.max_residual, 0.0f);
  for (bool filter : {false, true}) {
    SearchParams p;
    p.k = 10;
    if (filter) {
      p.allowed.assign(t.size(), 1);
      for (size_t i = 0; i < t.size(); i += 3) p.allowed[i] = 0;
    }
    std::vector<std::vector<Neighbor>> got, want;
    for (size_t i = 0; i < q.size(); ++i) {
      got.push_back(ExactSearch(rows, half, q.row(i), p));
      want.push_back(ExactSearch(rows, q.row(i), p));
      for (const Neighbor& nb : got.back()) {
        EXPECT_NEAR(nb.distance, 1.0f - InnerProduct(q.row(i), t.row(nb.row), t.dims), 2e-6);
      }
    }
    EXPECT_EQ(ListsDiffering(got, want), 0u) << (filter ? "filtered" : "");
  }
}

}  // namespace
}  // namespace nearlabel

#include <cblas.h>

#include "search/blas.h"

namespace nearlabel {
namespace {

// On an AVX-512 CPU OpenBLAS ends up on an AVX-512 core (unless the user chose one), and its
// products are still right.
TEST(BlasSetup, AnAvx512CpuGetsAvx512KernelsAndRightProducts) {
  UseFastestBlasKernels();
  const std::string core = openblas_get_corename();
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq")) {
    EXPECT_TRUE(core == "SkylakeX" || core == "Cooperlake" || core == "SapphireRapids") << core;
  }
  const VectorTable t = RandomTable(300, 64, 61);
  std::vector<float> c(300 * 300);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 300, 300, 64, 1.0f, t.vectors.data(), 64,
              t.vectors.data(), 64, 0.0f, c.data(), 300);
  for (size_t i = 0; i < 300; i += 17) {
    for (size_t j = 0; j < 300; j += 13) {
      double want = 0;
      for (int k = 0; k < 64; ++k) want += static_cast<double>(t.row(i)[k]) * t.row(j)[k];
      EXPECT_NEAR(c[i * 300 + j], want, 1e-5) << i << "," << j;
    }
  }
}

}  // namespace
}  // namespace nearlabel
