// The PatchCore building blocks: locally aware projected patches, greedy k-centre coreset,
// nearest-patch distances, AUROC and threshold calibration.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <numeric>
#include <random>

#include "nearlabel/anomaly.h"
#include "search/blas.h"
#include "search/parallel.h"

namespace nearlabel {
namespace {

// A Gaussian matrix (rows x cols) scaled by 1/sqrt(cols), so projected distances keep their
// size. Box-Muller over mt19937 rather than std::normal_distribution, whose output differs
// between standard libraries: a saved model must project the same way everywhere.
std::vector<float> GaussianMatrix(int rows, int cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> m(static_cast<size_t>(rows) * cols);
  const double scale = 1.0 / std::sqrt(static_cast<double>(cols));
  const double two_pi = 6.283185307179586;
  for (size_t i = 0; i < m.size(); i += 2) {
    const double u1 = (rng() + 1.0) / 4294967297.0;  // (0, 1]
    const double u2 = rng() / 4294967296.0;
    const double r = std::sqrt(-2.0 * std::log(u1));
    m[i] = static_cast<float>(r * std::cos(two_pi * u2) * scale);
    if (i + 1 < m.size()) m[i + 1] = static_cast<float>(r * std::sin(two_pi * u2) * scale);
  }
  return m;
}

// Squared norms of n rows.
std::vector<float> RowNorms2(const float* rows, size_t n, int dims) {
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) {
    const float* r = rows + i * static_cast<size_t>(dims);
    float s = 0;
    for (int d = 0; d < dims; ++d) s += r[d] * r[d];
    out[i] = s;
  }
  return out;
}

// min_dist[i] = min(min_dist[i], |row_i - c|^2) for rows [b, e) of `low` (sd wide, sd <= 32).
// Eight independent partial sums let the compiler vectorise the loop; it is compiled for
// AVX-512, AVX2 and the baseline, and UpdateMinDistances picks at run time (as search/simd.cc
// does; target_clones' load-time ifunc resolver crashes under ThreadSanitizer). This pass over
// every row, once per chosen centre, is where the coreset spends its time.
inline __attribute__((always_inline)) void UpdateMinDistancesBody(const float* low, int sd,
                                                                  const float* c, size_t b,
                                                                  size_t e, float* min_dist) {
  float cpad[32] = {0};
  std::copy(c, c + sd, cpad);
  for (size_t i = b; i < e; ++i) {
    const float* r = low + i * static_cast<size_t>(sd);
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int d = 0;
    for (; d + 8 <= sd; d += 8) {
      for (int j = 0; j < 8; ++j) {
        const float t = r[d + j] - cpad[d + j];
        acc[j] += t * t;
      }
    }
    for (; d < sd; ++d) acc[0] += (r[d] - cpad[d]) * (r[d] - cpad[d]);
    const float s =
        ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    if (s < min_dist[i]) min_dist[i] = s;
  }
}

__attribute__((target("avx512f"))) void UpdateMinDistancesAvx512(const float* low, int sd,
                                                                 const float* c, size_t b, size_t e,
                                                                 float* min_dist) {
  UpdateMinDistancesBody(low, sd, c, b, e, min_dist);
}

__attribute__((target("avx2,fma"))) void UpdateMinDistancesAvx2(const float* low, int sd,
                                                                const float* c, size_t b, size_t e,
                                                                float* min_dist) {
  UpdateMinDistancesBody(low, sd, c, b, e, min_dist);
}

void UpdateMinDistancesBaseline(const float* low, int sd, const float* c, size_t b, size_t e,
                                float* min_dist) {
  UpdateMinDistancesBody(low, sd, c, b, e, min_dist);
}

void UpdateMinDistances(const float* low, int sd, const float* c, size_t b, size_t e,
                        float* min_dist) {
  using Kernel = void (*)(const float*, int, const float*, size_t, size_t, float*);
  static const Kernel kernel = __builtin_cpu_supports("avx512f") ? UpdateMinDistancesAvx512
                               : __builtin_cpu_supports("avx2")  ? UpdateMinDistancesAvx2
                                                                 : UpdateMinDistancesBaseline;
  kernel(low, sd, c, b, e, min_dist);
}

}  // namespace

PatchProjector PatchProjector::Create(int raw_dims, int grid, const PatchFeatureOptions& options) {
  PatchProjector p;
  p.raw_dims_ = raw_dims;
  p.grid_ = grid;
  p.local_average_ = options.local_average;
  if (options.projected_dims > 0 && options.projected_dims < raw_dims) {
    p.dims_ = options.projected_dims;
    p.matrix_ = GaussianMatrix(raw_dims, p.dims_, options.seed);
  } else {
    p.dims_ = raw_dims;
  }
  return p;
}

Result<PatchProjector> PatchProjector::FromParts(int raw_dims, int grid, int dims,
                                                 bool local_average, std::vector<float> matrix) {
  const bool projected = !matrix.empty();
  if (raw_dims <= 0 || grid <= 0 || dims <= 0 ||
      (projected ? matrix.size() != static_cast<size_t>(raw_dims) * dims : dims != raw_dims)) {
    return Status::InvalidArgument("patch projector sizes do not fit together");
  }
  PatchProjector p;
  p.raw_dims_ = raw_dims;
  p.grid_ = grid;
  p.dims_ = dims;
  p.local_average_ = local_average;
  p.matrix_ = std::move(matrix);
  return p;
}

void PatchProjector::Apply(const float* raw, float* out) const {
  const size_t n = patches(), rd = static_cast<size_t>(raw_dims_);
  std::vector<float> local;
  const float* src = raw;
  if (local_average_) {
    // Each position's mean over its 3x3 neighbourhood inside the map (PatchCore's local
    // aggregation: a patch sees a little context, so one odd pixel matters less).
    local.assign(n * rd, 0.f);
    for (int y = 0; y < grid_; ++y) {
      for (int x = 0; x < grid_; ++x) {
        float* dst = local.data() + (static_cast<size_t>(y) * grid_ + x) * rd;
        int count = 0;
        for (int yy = std::max(0, y - 1); yy <= std::min(grid_ - 1, y + 1); ++yy) {
          for (int xx = std::max(0, x - 1); xx <= std::min(grid_ - 1, x + 1); ++xx) {
            const float* s = raw + (static_cast<size_t>(yy) * grid_ + xx) * rd;
            for (size_t d = 0; d < rd; ++d) dst[d] += s[d];
            ++count;
          }
        }
        const float inv = 1.0f / static_cast<float>(count);
        for (size_t d = 0; d < rd; ++d) dst[d] *= inv;
      }
    }
    src = local.data();
  }
  if (matrix_.empty()) {
    std::copy(src, src + n * rd, out);
    return;
  }
  UseFastestBlasKernels();
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(n), dims_, raw_dims_,
              1.0f, src, raw_dims_, matrix_.data(), dims_, 0.0f, out, dims_);
}

std::vector<size_t> GreedyCoreset(const float* rows, size_t n, int dims, size_t m, uint32_t seed) {
  std::vector<size_t> chosen;
  if (m >= n) {
    chosen.resize(n);
    std::iota(chosen.begin(), chosen.end(), size_t{0});
    return chosen;
  }
  if (m == 0) return chosen;
  // Selection runs in at most 32 dims: every step reads all n rows, so their width is the cost.
  const int sd = std::min(dims, 32);
  std::vector<float> low(n * static_cast<size_t>(sd));
  if (sd < dims) {
    const std::vector<float> proj = GaussianMatrix(dims, sd, seed ^ 0x9e3779b9u);
    UseFastestBlasKernels();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(n), sd, dims, 1.0f,
                rows, dims, proj.data(), sd, 0.0f, low.data(), sd);
  } else {
    std::copy(rows, rows + n * static_cast<size_t>(dims), low.begin());
  }
  // Rows are grouped in blocks of kBlock consecutive rows (neighbouring patches of one
  // image, so blocks are tight) with a centroid and a radius. When a new centre is farther
  // from a block's centroid than the radius plus the block's largest current distance, no row
  // of the block can get closer (triangle inequality) and the block is skipped: once the
  // coreset covers the data, most blocks are, and a step costs far less than a full pass.
  constexpr size_t kBlock = 64;
  const size_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<float> centroid(blocks * static_cast<size_t>(sd), 0.f), radius(blocks, 0.f);
  for (size_t k = 0; k < blocks; ++k) {
    float* cen = centroid.data() + k * static_cast<size_t>(sd);
    const size_t b = k * kBlock, e = std::min(n, b + kBlock);
    for (size_t i = b; i < e; ++i) {
      for (int d = 0; d < sd; ++d) cen[d] += low[i * static_cast<size_t>(sd) + d];
    }
    for (int d = 0; d < sd; ++d) cen[d] /= static_cast<float>(e - b);
    float r2 = 0;
    for (size_t i = b; i < e; ++i) {
      float s2 = 0;
      for (int d = 0; d < sd; ++d) {
        const float t = low[i * static_cast<size_t>(sd) + d] - cen[d];
        s2 += t * t;
      }
      r2 = std::max(r2, s2);
    }
    radius[k] = std::sqrt(r2) * 1.0001f + 1e-6f;  // rounding slack keeps the skip test safe
  }
  std::vector<float> min_dist(n, std::numeric_limits<float>::infinity());
  std::vector<float> block_max(blocks, std::numeric_limits<float>::infinity());
  size_t next = std::mt19937(seed)() % n;
  for (size_t step = 0; step < m; ++step) {
    chosen.push_back(next);
    const float* c = low.data() + next * static_cast<size_t>(sd);
    ParallelFor(
        blocks,
        [&](size_t kb, size_t ke) {
          for (size_t k = kb; k < ke; ++k) {
            const float* cen = centroid.data() + k * static_cast<size_t>(sd);
            float s2 = 0;
            for (int d = 0; d < sd; ++d) s2 += (cen[d] - c[d]) * (cen[d] - c[d]);
            const float gap = std::sqrt(s2) - radius[k];
            if (gap > 0 && gap * gap >= block_max[k]) continue;
            const size_t b = k * kBlock, e = std::min(n, b + kBlock);
            UpdateMinDistances(low.data(), sd, c, b, e, min_dist.data());
            block_max[k] = *std::max_element(min_dist.begin() + static_cast<ptrdiff_t>(b),
                                             min_dist.begin() + static_cast<ptrdiff_t>(e));
          }
        },
        1024);
    // The farthest row: in the block with the largest maximum (chosen rows are at 0).
    const size_t k = static_cast<size_t>(std::max_element(block_max.begin(), block_max.end()) -
                                         block_max.begin());
    if (!(block_max[k] > 0)) break;  // every row coincides with a chosen one
    const size_t b = k * kBlock, e = std::min(n, b + kBlock);
    next = static_cast<size_t>(std::max_element(min_dist.begin() + static_cast<ptrdiff_t>(b),
                                                min_dist.begin() + static_cast<ptrdiff_t>(e)) -
                               min_dist.begin());
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

void NearestPatches(const float* bank, size_t nb, const float* queries, size_t nq, int dims,
                    std::vector<float>* distance, std::vector<uint32_t>* index,
                    const int32_t* bank_group, int32_t exclude_group) {
  distance->assign(nq, std::numeric_limits<float>::infinity());
  if (index) index->assign(nq, static_cast<uint32_t>(nb));
  if (nq == 0 || nb == 0) return;
  constexpr size_t kQueryChunk = 1024;  // bounds the similarity buffer to 8 MB
  if (nq > kQueryChunk) {
    std::vector<float> d;
    std::vector<uint32_t> i;
    for (size_t q0 = 0; q0 < nq; q0 += kQueryChunk) {
      const size_t qn = std::min(kQueryChunk, nq - q0);
      NearestPatches(bank, nb, queries + q0 * static_cast<size_t>(dims), qn, dims, &d,
                     index ? &i : nullptr, bank_group, exclude_group);
      std::copy(d.begin(), d.end(), distance->begin() + static_cast<ptrdiff_t>(q0));
      if (index) std::copy(i.begin(), i.end(), index->begin() + static_cast<ptrdiff_t>(q0));
    }
    return;
  }
  const std::vector<float> qn = RowNorms2(queries, nq, dims);
  constexpr size_t kBlock = 2048;
  std::vector<float> best(nq, std::numeric_limits<float>::infinity());
  std::vector<uint32_t> best_i(nq, static_cast<uint32_t>(nb));
  std::vector<float> sims(nq * kBlock);
  for (size_t b0 = 0; b0 < nb; b0 += kBlock) {
    const size_t bn = std::min(kBlock, nb - b0);
    const float* block = bank + b0 * static_cast<size_t>(dims);
    const std::vector<float> bnorm = RowNorms2(block, bn, dims);
    UseFastestBlasKernels();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(nq), static_cast<int>(bn),
                dims, 1.0f, queries, dims, block, dims, 0.0f, sims.data(), static_cast<int>(bn));
    for (size_t q = 0; q < nq; ++q) {
      const float* s = sims.data() + q * bn;
      float bq = best[q];
      uint32_t iq = best_i[q];
      for (size_t j = 0; j < bn; ++j) {
        if (bank_group && bank_group[b0 + j] == exclude_group) continue;
        const float d = bnorm[j] - 2.0f * s[j];
        if (d < bq) {
          bq = d;
          iq = static_cast<uint32_t>(b0 + j);
        }
      }
      best[q] = bq;
      best_i[q] = iq;
    }
  }
  for (size_t q = 0; q < nq; ++q) {
    if (best_i[q] == nb) continue;
    (*distance)[q] = std::sqrt(std::max(0.0f, best[q] + qn[q]));
  }
  if (index) *index = std::move(best_i);
}

double Auroc(const std::vector<float>& normal, const std::vector<float>& anomalous) {
  if (normal.empty() || anomalous.empty()) return 0.5;
  // Rank-sum over the merged list, average ranks for ties.
  std::vector<std::pair<float, int>> all;
  for (float s : normal) all.push_back({s, 0});
  for (float s : anomalous) all.push_back({s, 1});
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  double rank_sum = 0;
  for (size_t i = 0; i < all.size();) {
    size_t j = i;
    while (j < all.size() && all[j].first == all[i].first) ++j;
    const double rank = (static_cast<double>(i + 1) + static_cast<double>(j)) / 2.0;
    for (size_t t = i; t < j; ++t) rank_sum += all[t].second ? rank : 0;
    i = j;
  }
  const double na = static_cast<double>(anomalous.size()), nn = static_cast<double>(normal.size());
  return (rank_sum - na * (na + 1) / 2.0) / (na * nn);
}

float ThresholdForFalseAlarms(std::vector<float> scores, double rate) {
  if (scores.empty()) return 0;
  std::sort(scores.begin(), scores.end());
  const double pos = std::clamp(1.0 - rate, 0.0, 1.0) * static_cast<double>(scores.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(scores.size() - 1, lo + 1);
  const double f = pos - static_cast<double>(lo);
  return static_cast<float>(scores[lo] * (1 - f) + scores[hi] * f);
}

}  // namespace nearlabel
