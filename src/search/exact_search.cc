#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <mutex>
#include <queue>
#include <thread>

#include "nearlabel/search.h"
#include "search/bf16_gemm.h"
#include "search/parallel.h"
#include "search/simd.h"

namespace nearlabel {
namespace {

// Keeps the k smallest (distance, row) pairs seen.
class TopK {
 public:
  explicit TopK(int k) : k_(static_cast<size_t>(std::max(k, 0))) {}
  void Push(float distance, size_t row) {
    if (k_ == 0) return;
    if (heap_.size() < k_) {
      heap_.push({distance, row});
    } else if (Less({distance, row}, heap_.top())) {
      heap_.pop();
      heap_.push({distance, row});
    }
  }
  // Worst distance kept, or +inf until k are kept: a cheap pre-check before Push.
  float Bound() const {
    return heap_.size() < k_ ? std::numeric_limits<float>::infinity() : heap_.top().first;
  }
  // A similarity below which nothing can enter (-inf until k are kept): lets scans compare the
  // raw sgemm output and call Push only for the few candidates (slack covers 1 - s rounding).
  float SimilarityBound() const {
    return heap_.size() < k_ ? -std::numeric_limits<float>::infinity()
                             : 1.0f - heap_.top().first - 1e-6f;
  }
  std::vector<Neighbor> Take() {
    std::vector<Neighbor> out(heap_.size());
    for (size_t i = out.size(); i-- > 0;) {
      out[i] = {heap_.top().second, heap_.top().first};
      heap_.pop();
    }
    return out;
  }

 private:
  using Entry = std::pair<float, size_t>;
  static bool Less(const Entry& a, const Entry& b) {
    return a.first < b.first || (a.first == b.first && a.second < b.second);
  }
  struct Cmp {
    bool operator()(const Entry& a, const Entry& b) const { return Less(a, b); }
  };
  size_t k_;
  std::priority_queue<Entry, std::vector<Entry>, Cmp> heap_;  // max-heap: worst on top
};

// Whether any of s[0, n) is >= bound. Branch-free, so the compiler vectorises it: scans check
// a chunk of similarities this way and look at single values only in the rare chunk that
// holds a candidate.
constexpr size_t kChunk = 256;
inline bool AnyAtLeast(const float* s, size_t n, float bound) {
  bool any = false;
  for (size_t j = 0; j < n; ++j) any |= s[j] >= bound;
  return any;
}

}  // namespace

std::vector<Neighbor> ExactSearch(const VectorTable& table, const float* query,
                                  const SearchParams& params) {
  return ExactSearch(MatrixView{table.vectors.data(), table.size(), table.dims}, query, params);
}

std::vector<Neighbor> ExactSearch(const MatrixView& table, const float* query,
                                  const SearchParams& params) {
  const size_t n = table.rows;
  if (n == 0 || params.k <= 0) return {};
  std::vector<float> sims(n);
  cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(n), table.dims, 1.0f, table.data,
              table.dims, query, 1, 0.0f, sims.data(), 1);
  TopK top(params.k);
  const bool filtered = !params.allowed.empty();
  for (size_t i = 0; i < n; ++i) {
    if (filtered && !params.allowed[i]) continue;
    const float d = 1.0f - sims[i];
    if (d <= top.Bound()) top.Push(d, i);
  }
  return top.Take();
}

namespace {

// ExactSearchBatch on AMX: the similarities of bfloat16 copies (several times the float32
// GEMM rate) pick candidates, which are re-ranked with float32 dot products.
// Why the candidates hold the exact top k: for a query q and row r with bf16 copies q', r',
//   |q'.r' - q.r| <= ||q - q'|| ||r|| + ||q'|| ||r - r'|| + (float32 sum rounding)  = eps_q
// (Cauchy-Schwarz on the rounding residuals, whose norms are measured, not assumed). So every
// row of the exact top k has an approximate similarity >= (approximate k-th best) - 2 eps_q,
// and the scan keeps every row above that line (the line only rises as the scan goes, so a
// row kept early may be dropped later, never the reverse). On unit vectors eps_q ~ 0.005 in
// the worst case and the actual error is ~20x smaller; the line costs a few extra candidates.
std::vector<std::vector<Neighbor>> ExactSearchBatchBf16(const VectorTable& table,
                                                        const float* queries, size_t nq,
                                                        const SearchParams& params) {
  const size_t n = table.size(), d = static_cast<size_t>(table.dims);
  const Bf16Tiles tiles = PackTilesBf16(table.vectors.data(), n, d);
  const size_t pd = tiles.padded_dims, padded_nq = (nq + 31) / 32 * 32;
  std::vector<uint16_t> qa(padded_nq * pd);
  std::vector<float> qnorm(nq), qres(nq), margin(nq);
  RowsToBf16(queries, nq, d, padded_nq, pd, qa.data(), qnorm.data(), qres.data());
  // gamma: the relative rounding bound of a float32 sum of d products (both the tile unit's
  // and the re-rank's), applied to the largest possible |q'||r'|.
  const double gamma = static_cast<double>(d + 2) * std::ldexp(1.0, -24);
  for (size_t q = 0; q < nq; ++q) {
    const double qn = qnorm[q] + qres[q], rn = tiles.max_norm + tiles.max_residual;
    const double eps = qres[q] * static_cast<double>(tiles.max_norm) + qn * tiles.max_residual +
                       2 * gamma * qn * rn;
    margin[q] = static_cast<float>(2 * eps + 1e-6);
  }
  const size_t k = static_cast<size_t>(params.k);
  const bool filtered = !params.allowed.empty();
  std::vector<TopK> approx(nq, TopK(params.k));
  std::vector<std::vector<std::pair<float, size_t>>> cands(nq);
  const size_t qblock = 2048, rblock = 4096;  // multiples of 32; 32 MB of similarities
  std::vector<float> sims(std::min(qblock, padded_nq) * std::min(rblock, tiles.padded_rows));
  for (size_t q0 = 0; q0 < padded_nq; q0 += qblock) {
    const size_t nqb = std::min(qblock, padded_nq - q0), real_q = std::min(nqb, nq - q0);
    for (size_t r0 = 0; r0 < tiles.padded_rows; r0 += rblock) {
      const size_t nr = std::min(rblock, tiles.padded_rows - r0), real_r = std::min(nr, n - r0);
      ParallelFor(
          nqb / 32,
          [&](size_t t0, size_t t1) {  // in 32-query tiles
            AmxGemmBf16(qa.data() + (q0 + t0 * 32) * pd, (t1 - t0) * 32, tiles, r0, nr,
                        sims.data() + t0 * 32 * nr, nr);
          },
          1);
      ParallelFor(real_q, [&](size_t qb, size_t qe) {
        for (size_t qi = qb; qi < qe; ++qi) {
          const size_t q = q0 + qi;
          TopK& top = approx[q];
          auto& cand = cands[q];
          const float* s = sims.data() + qi * nr;
          float line = top.SimilarityBound() - margin[q];
          for (size_t c0 = 0; c0 < real_r; c0 += kChunk) {
            const size_t c1 = std::min(real_r, c0 + kChunk);
            if (!AnyAtLeast(s + c0, c1 - c0, line)) continue;
            for (size_t j = c0; j < c1; ++j) {
              if (s[j] < line) continue;
              if (filtered && !params.allowed[r0 + j]) continue;
              top.Push(1.0f - s[j], r0 + j);
              cand.push_back({s[j], r0 + j});
              line = top.SimilarityBound() - margin[q];
            }
          }
          if (cand.size() > 8 * k + 1024) {  // drop what fell below the risen line
            cand.erase(std::remove_if(cand.begin(), cand.end(),
                                      [line](const auto& c) { return c.first < line; }),
                       cand.end());
          }
        }
      });
    }
  }
  std::vector<std::vector<Neighbor>> result(nq);
  ParallelFor(nq, [&](size_t qb, size_t qe) {
    for (size_t q = qb; q < qe; ++q) {
      const float line = approx[q].SimilarityBound() - margin[q];
      TopK exact(params.k);
      for (const auto& [s, row] : cands[q]) {
        if (s < line) continue;
        exact.Push(1.0f - InnerProduct(queries + q * d, table.row(row), d), row);
      }
      result[q] = exact.Take();
    }
  });
  return result;
}

}  // namespace

std::vector<std::vector<Neighbor>> ExactSearchBatch(const VectorTable& table, const float* queries,
                                                    size_t nq, const SearchParams& params) {
  const size_t n = table.size();
  const int d = table.dims;
  std::vector<std::vector<Neighbor>> result(nq);
  if (n == 0 || nq == 0 || params.k <= 0) return result;
  if (params.bf16_candidates && nq >= 32 && AmxBf16Available()) {
    return ExactSearchBatchBf16(table, queries, nq, params);
  }
  std::vector<TopK> tops(nq, TopK(params.k));
  const bool filtered = !params.allowed.empty();
  // Blocks of up to 4096 queries x 4096 rows (at most 64 MB of similarities): one
  // multi-threaded sgemm each at BLAS speed, then a scan that compares chunks of similarities
  // against the query's current k-th best with vector instructions. Measured in bench/search:
  // 1024-row blocks ran 5% slower (more sgemm calls, each waking OpenBLAS's threads), and
  // per-core single-thread sgemms on L2-sized blocks 20% slower.
  // For small d the sgemm of a block is cheap and the scan is not: 1024-row blocks keep the
  // similarities in cache while they are scanned (FAISS's choice too).
  const size_t qblock = 4096, rblock = d >= 512 ? 4096 : 1024;
  std::vector<float> sims(std::min(qblock, nq) * std::min(rblock, n));
  for (size_t q0 = 0; q0 < nq; q0 += qblock) {
    const size_t nqb = std::min(qblock, nq - q0);
    for (size_t r0 = 0; r0 < n; r0 += rblock) {
      const size_t nr = std::min(rblock, n - r0);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(nqb),
                  static_cast<int>(nr), d, 1.0f, queries + q0 * d, d, table.row(r0), d, 0.0f,
                  sims.data(), static_cast<int>(nr));
      // The scan runs on every core (queries split between threads; each owns its lists):
      // on clustered data many similarities pass the bound and the scan is not free.
      ParallelFor(nqb, [&](size_t qb, size_t qe) {
        for (size_t qi = qb; qi < qe; ++qi) {
          TopK& top = tops[q0 + qi];
          const float* s = sims.data() + qi * nr;
          float bound = top.SimilarityBound();
          for (size_t c0 = 0; c0 < nr; c0 += kChunk) {
            const size_t c1 = std::min(nr, c0 + kChunk);
            if (!AnyAtLeast(s + c0, c1 - c0, bound)) continue;  // the common case
            for (size_t j = c0; j < c1; ++j) {
              if (s[j] < bound) continue;
              if (filtered && !params.allowed[r0 + j]) continue;
              top.Push(1.0f - s[j], r0 + j);
              bound = top.SimilarityBound();
            }
          }
        }
      });
    }
  }
  for (size_t q = 0; q < nq; ++q) result[q] = tops[q].Take();
  return result;
}

std::vector<std::vector<Neighbor>> LeaveOneOutNeighbors(const VectorTable& table, int k,
                                                        const std::vector<int>& partition,
                                                        const std::vector<int>& group,
                                                        size_t tile) {
  const size_t n = table.size();
  const int d = table.dims;
  std::vector<std::vector<Neighbor>> result(n);
  // Rows of each partition, in row order.
  std::map<int, std::vector<size_t>> parts;
  for (size_t i = 0; i < n; ++i) parts[partition.empty() ? 0 : partition[i]].push_back(i);

  std::vector<float> block, sims;
  for (const auto& part : parts) {
    const std::vector<size_t>& rows = part.second;  // (a lambda below captures it)
    const size_t m = rows.size();
    // Gather the partition contiguously (a no-op copy when there is one partition).
    block.resize(m * static_cast<size_t>(d));
    for (size_t r = 0; r < m; ++r) {
      std::copy(table.row(rows[r]), table.row(rows[r]) + d, block.data() + r * d);
    }
    std::vector<TopK> tops(m, TopK(k));
    // bound[a]: tops[a].SimilarityBound(), kept contiguous so the scans below compare a row of
    // similarities against an array and touch a heap only for a real candidate.
    std::vector<float> bound(m, -std::numeric_limits<float>::infinity());
    // Offers row b (partition index) to row a's list unless the rules exclude it.
    auto offer = [&](size_t a, size_t b, float sim) {
      if (!group.empty() && group[rows[a]] >= 0 && group[rows[a]] == group[rows[b]]) return;
      tops[a].Push(1.0f - sim, rows[b]);
      bound[a] = tops[a].SimilarityBound();
    };
    // The similarity matrix is symmetric: compute only the tiles on and above the diagonal
    // (half the FLOPs of the full N x N product) and let each off-diagonal tile feed both
    // its rows' and its columns' lists. Tiles of 4096 x 4096 (64 MB) keep sgemm at full speed.
    tile = std::max<size_t>(tile, 1);
    sims.resize(std::min(tile, m) * std::min(tile, m));
    for (size_t i0 = 0; i0 < m; i0 += tile) {
      const size_t ni = std::min(tile, m - i0);
      for (size_t j0 = i0; j0 < m; j0 += tile) {
        const size_t nj = std::min(tile, m - j0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(ni),
                    static_cast<int>(nj), d, 1.0f, block.data() + i0 * d, d, block.data() + j0 * d,
                    d, 0.0f, sims.data(), static_cast<int>(nj));
        const bool diagonal = i0 == j0;
        // Two workers: one feeds the tile's rows, the other its columns (disjoint lists off
        // the diagonal); on the diagonal both feed rows, split in halves.
        auto rows_side = [&](size_t begin, size_t end) {
          for (size_t i = begin; i < end; ++i) {
            const float* s = sims.data() + i * nj;
            for (size_t c0 = 0; c0 < nj; c0 += kChunk) {
              const size_t c1 = std::min(nj, c0 + kChunk);
              if (!AnyAtLeast(s + c0, c1 - c0, bound[i0 + i])) continue;
              for (size_t j = c0; j < c1; ++j) {
                if (s[j] < bound[i0 + i] || (diagonal && i == j)) continue;
                offer(i0 + i, j0 + j, s[j]);
              }
            }
          }
        };
        auto columns_side = [&] {
          float* cb = bound.data() + j0;
          for (size_t i = 0; i < ni; ++i) {
            const float* s = sims.data() + i * nj;
            // Branch-free pre-check over the row, so the compiler vectorises it.
            bool any = false;
            for (size_t j = 0; j < nj; ++j) any |= s[j] >= cb[j];
            if (!any) continue;
            for (size_t j = 0; j < nj; ++j) {
              if (s[j] >= cb[j]) offer(j0 + j, i0 + i, s[j]);
            }
          }
        };
        if (diagonal) {
          ParallelFor(ni, rows_side);
        } else {
          std::thread columns(columns_side);
          rows_side(0, ni);
          columns.join();
        }
      }
    }
    for (size_t r = 0; r < m; ++r) result[rows[r]] = tops[r].Take();
  }
  return result;
}

}  // namespace nearlabel
