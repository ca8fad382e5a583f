#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <queue>
#include <thread>

#include "nearlabel/search.h"
#include "search/bf16_gemm.h"
#include "search/bf16_search.h"
#include "search/blas.h"
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

// Similarities a scan checks at once with AnyAtLeast (simd.h).
constexpr size_t kChunk = 256;

}  // namespace

std::vector<Neighbor> ExactSearch(const VectorTable& table, const float* query,
                                  const SearchParams& params) {
  return ExactSearch(MatrixView{table.vectors.data(), table.size(), table.dims}, query, params);
}

namespace {

// How single-query scans compute similarities: our DotRows where the CPU has AVX-512 (four
// rows per step, prefetched: the scan reaches the memory's read rate, which OpenBLAS's sgemv
// did not: bench/search), else BLAS sgemv. NEARLABEL_SCAN_KERNEL=blas forces sgemv.
bool ScanWithDotRows() {
  static const bool dot_rows = [] {
    const char* forced = std::getenv("NEARLABEL_SCAN_KERNEL");
    if (forced && std::strcmp(forced, "blas") == 0) return false;
    return std::strcmp(InnerProductKernel(), "avx512") == 0;
  }();
  return dot_rows;
}

// Scans rows [0, n) in 4096-row chunks on every core: similarities(begin, count, out) fills a
// chunk, and every allowed row whose similarity is at least its thread list's Line() goes to
// keep(thread list, similarity, row). Returns the threads' lists.
template <typename Similarities, typename List, typename Keep>
std::vector<List> ParallelScan(size_t n, const std::vector<uint8_t>& allowed, const List& empty,
                               const Similarities& similarities, const Keep& keep) {
  constexpr size_t kRows = 4096;
  const size_t chunks = (n + kRows - 1) / kRows;
  const size_t workers =
      std::min<size_t>(std::max(1u, std::thread::hardware_concurrency()), chunks);
  std::vector<List> lists(workers, empty);
  ParallelFor(
      workers,
      [&](size_t w0, size_t w1) {
        std::vector<float> sims(kRows);
        for (size_t w = w0; w < w1; ++w) {
          List& list = lists[w];
          for (size_t c = w * chunks / workers; c < (w + 1) * chunks / workers; ++c) {
            const size_t r0 = c * kRows, nr = std::min(kRows, n - r0);
            similarities(r0, nr, sims.data());
            for (size_t c0 = 0; c0 < nr; c0 += kChunk) {
              const size_t c1 = std::min(nr, c0 + kChunk);
              if (!AnyAtLeast(sims.data() + c0, c1 - c0, list.Line())) continue;
              for (size_t j = c0; j < c1; ++j) {
                if (sims[j] < list.Line()) continue;
                if (!allowed.empty() && !allowed[r0 + j]) continue;
                keep(list, sims[j], r0 + j);
              }
            }
          }
        }
      },
      1);
  return lists;
}

// TopK with the Line() a scan compares against.
struct ScanList {
  TopK top;
  float Line() const { return top.SimilarityBound(); }
};

}  // namespace

std::vector<Neighbor> ExactSearch(const MatrixView& table, const float* query,
                                  const SearchParams& params) {
  const size_t n = table.rows, d = static_cast<size_t>(table.dims);
  if (n == 0 || params.k <= 0) return {};
  if (!ScanWithDotRows()) {
    UseFastestBlasKernels();
    std::vector<float> sims(n);  // (the OpenBLAS path as before)
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(n), table.dims, 1.0f, table.data,
                table.dims, query, 1, 0.0f, sims.data(), 1);
    TopK top(params.k);
    const bool filtered = !params.allowed.empty();
    for (size_t i = 0; i < n; ++i) {
      if (filtered && !params.allowed[i]) continue;
      const float dist = 1.0f - sims[i];
      if (dist <= top.Bound()) top.Push(dist, i);
    }
    return top.Take();
  }
  auto lists = ParallelScan(
      n, params.allowed, ScanList{TopK(params.k)},
      [&](size_t r0, size_t nr, float* out) { DotRows(table.data + r0 * d, nr, d, query, out); },
      [](ScanList& list, float sim, size_t row) { list.top.Push(1.0f - sim, row); });
  TopK top(params.k);
  for (ScanList& list : lists) {
    for (const Neighbor& nb : list.top.Take()) top.Push(nb.distance, nb.row);
  }
  return top.Take();
}

namespace {

// Why bf16 candidates hold the exact top k: for a query q and row r with bf16 copies q', r',
//   |q'.r' - q.r| <= ||q - q'|| ||r|| + ||q'|| ||r - r'|| + (float32 sum rounding)  = eps_q
// (Cauchy-Schwarz on the rounding residuals, whose norms are measured, not assumed). So every
// row of the exact top k has an approximate similarity >= (approximate k-th best) - 2 eps_q,
// and the scan keeps every row above that line (the line only rises as the scan goes, so a
// row kept early may be dropped later, never the reverse). On unit vectors eps_q ~ 0.005 in
// the worst case and the actual error is ~20x smaller; the line costs a few extra candidates.
// This returns 2 eps_q (+1e-6 for the 1 - s rounding of the lists) for a query of norm qnorm
// and residual norm qres against rows whose largest norm and residual norm are given (the
// half-precision copy passes qres = 0: its query stays float32).
float CandidateMargin(double qnorm, double qres, double max_norm, double max_residual, size_t d) {
  // gamma: the relative rounding bound of a float32 sum of d products (both the approximate
  // scan's and the re-rank's), applied to the largest possible |q'||r'|.
  const double gamma = static_cast<double>(d + 2) * std::ldexp(1.0, -24);
  const double qn = qnorm + qres, rn = max_norm + max_residual;
  const double eps = qres * max_norm + qn * max_residual + 2 * gamma * qn * rn;
  return static_cast<float>(2 * eps + 1e-6);
}

// The bf16 copy of one side of a product (queries, or a partition's rows) and each row's
// candidate margin against rows with the given bounds.
struct Bf16Operand {
  std::vector<uint16_t> rows;  // padded to a multiple of 32 rows x padded_dims
  std::vector<float> margin;
};
Bf16Operand MakeOperand(const float* rows, size_t n, size_t d, size_t padded_dims,
                        const Bf16Bounds& other, float margin_scale) {
  Bf16Operand op;
  const size_t padded_n = (n + 31) / 32 * 32;
  op.rows.resize(padded_n * padded_dims);
  std::vector<float> norm(n), res(n);
  RowsToBf16(rows, n, d, padded_n, padded_dims, op.rows.data(), norm.data(), res.data());
  op.margin.resize(n);
  for (size_t i = 0; i < n; ++i)
    op.margin[i] =
        margin_scale * CandidateMargin(norm[i], res[i], other.max_norm, other.max_residual, d);
  return op;
}

// One row's approximate top k and every row that passed its candidate line so far.
class CandidateList {
 public:
  CandidateList(int k, float margin) : approx_(k), margin_(margin), k_(static_cast<size_t>(k)) {}
  float Line() const { return line_; }
  void Offer(float sim, size_t row) {
    approx_.Push(1.0f - sim, row);
    cands_.push_back({sim, row});
    line_ = approx_.SimilarityBound() - margin_;
    if (cands_.size() > 8 * k_ + 1024) {  // drop what fell below the risen line
      cands_.erase(std::remove_if(cands_.begin(), cands_.end(),
                                  [this](const auto& c) { return c.first < line_; }),
                   cands_.end());
    }
  }
  // The exact top k over the rows of lists [first, last) (one query's: a single list, or the
  // disjoint lists of one scan's threads, all with the same margin): the candidates above the
  // line of their union's approximate top k, re-ranked by `similarity(row)`.
  template <typename Exact>
  static std::vector<Neighbor> Rerank(const CandidateList* first, const CandidateList* last,
                                      const Exact& similarity) {
    TopK approx(static_cast<int>(first->k_));
    for (const CandidateList* l = first; l != last; ++l) {
      for (const auto& [s, row] : l->cands_) approx.Push(1.0f - s, row);
    }
    const float line = approx.SimilarityBound() - first->margin_;
    TopK exact(static_cast<int>(first->k_));
    for (const CandidateList* l = first; l != last; ++l) {
      for (const auto& [s, row] : l->cands_) {
        if (s >= line) exact.Push(1.0f - similarity(row), row);
      }
    }
    return exact.Take();
  }

 private:
  TopK approx_;
  float margin_;
  size_t k_;
  float line_ = -std::numeric_limits<float>::infinity();
  std::vector<std::pair<float, size_t>> cands_;
};

// Runs `kernel` over rows [i0, i0 + ni) of `a` against packed rows [j0, j0 + nj) on every
// core, in 32-row slices (ni, nj, i0 and j0 multiples of 32); sims gets ni x nj.
void ParallelGemmBf16(Bf16Kernel kernel, const Bf16Operand& a, size_t i0, size_t ni,
                      const Bf16Tiles& tiles, size_t j0, size_t nj, float* sims) {
  const size_t pd = tiles.padded_dims;
  ParallelFor(
      ni / 32,
      [&](size_t t0, size_t t1) {
        GemmBf16(kernel, a.rows.data() + (i0 + t0 * 32) * pd, (t1 - t0) * 32, tiles, j0, nj,
                 sims + t0 * 32 * nj, nj);
      },
      1);
}

}  // namespace

HalfRows MakeHalfRows(const MatrixView& rows) {
  HalfRows h;
  h.rows = rows.rows;
  h.dims = rows.dims;
  const size_t d = static_cast<size_t>(rows.dims);
  h.data.resize(h.rows * d);
  std::vector<float> norm(h.rows), res(h.rows);
  ParallelFor(h.rows, [&](size_t b, size_t e) {
    std::vector<float> back(d);
    for (size_t r = b; r < e; ++r) {
      const float* x = rows.data + r * d;
      FloatToHalf(x, h.data.data() + r * d, d);
      HalfToFloat(h.data.data() + r * d, back.data(), d);
      double n2 = 0, r2 = 0;
      for (size_t i = 0; i < d; ++i) {
        const double diff = static_cast<double>(x[i]) - back[i];
        n2 += static_cast<double>(x[i]) * x[i];
        r2 += diff * diff;
      }
      norm[r] = static_cast<float>(std::sqrt(n2));
      res[r] = static_cast<float>(std::sqrt(r2));
    }
  });
  for (size_t r = 0; r < h.rows; ++r) {
    h.max_norm = std::max(h.max_norm, norm[r]);
    h.max_residual = std::max(h.max_residual, res[r]);
  }
  h.max_norm *= 1.0001f;  // (double sums rounded to float: keep the bound a bound)
  h.max_residual *= 1.0001f;
  return h;
}

std::vector<Neighbor> ExactSearch(const MatrixView& rows, const HalfRows& half, const float* query,
                                  const SearchParams& params) {
  const size_t n = rows.rows, d = static_cast<size_t>(rows.dims);
  if (n == 0 || params.k <= 0) return {};
  // The bf16 bound with an exact query: |q.r' - q.r| <= ||q|| ||r - r'|| + float32 sums.
  double qn2 = 0;
  for (size_t i = 0; i < d; ++i) qn2 += static_cast<double>(query[i]) * query[i];
  const float margin =
      CandidateMargin(std::sqrt(qn2) * 1.0001, 0, half.max_norm, half.max_residual, d);
  auto lists = ParallelScan(
      n, params.allowed, CandidateList(params.k, margin),
      [&](size_t r0, size_t nr, float* out) {
        DotRowsHalf(half.data.data() + r0 * d, nr, d, query, out);
      },
      [](CandidateList& list, float sim, size_t row) { list.Offer(sim, row); });
  // Re-ranked with the float32 scan's own arithmetic: the same distances, bit for bit.
  return CandidateList::Rerank(lists.data(), lists.data() + lists.size(), [&](size_t row) {
    float sim;
    DotRows(rows.data + row * d, 1, d, query, &sim);
    return sim;
  });
}

std::vector<std::vector<Neighbor>> ExactSearchBatchBf16(const VectorTable& table,
                                                        const float* queries, size_t nq,
                                                        const SearchParams& params,
                                                        Bf16Kernel kernel, float margin_scale) {
  const size_t n = table.size(), d = static_cast<size_t>(table.dims);
  // The table is packed one row block at a time into one reused buffer (bf16_gemm.h says why);
  // the margins need the whole table's bounds first.
  const size_t padded_dims = Bf16PaddedDims(d), padded_n = (n + 31) / 32 * 32;
  const Bf16Bounds table_bounds = BoundsBf16(table.vectors.data(), n, d);
  const Bf16Operand qa = MakeOperand(queries, nq, d, padded_dims, table_bounds, margin_scale);
  const size_t padded_nq = qa.rows.size() / padded_dims;
  const bool filtered = !params.allowed.empty();
  std::vector<CandidateList> lists;
  lists.reserve(nq);
  for (size_t q = 0; q < nq; ++q) lists.emplace_back(params.k, qa.margin[q]);
  const size_t qblock = 2048, rblock = 4096;  // multiples of 32; 32 MB of similarities
  std::vector<float> sims(std::min(qblock, padded_nq) * std::min(rblock, padded_n));
  Bf16Tiles tiles;
  for (size_t q0 = 0; q0 < padded_nq; q0 += qblock) {
    const size_t nqb = std::min(qblock, padded_nq - q0), real_q = std::min(nqb, nq - q0);
    for (size_t r0 = 0; r0 < padded_n; r0 += rblock) {
      const size_t nr = std::min(rblock, padded_n - r0), real_r = std::min(nr, n - r0);
      PackTilesBf16(table.row(r0), real_r, d, &tiles, &table_bounds);
      ParallelGemmBf16(kernel, qa, q0, nqb, tiles, 0, nr, sims.data());
      ParallelFor(real_q, [&](size_t qb, size_t qe) {
        for (size_t qi = qb; qi < qe; ++qi) {
          CandidateList& list = lists[q0 + qi];
          const float* s = sims.data() + qi * nr;
          for (size_t c0 = 0; c0 < real_r; c0 += kChunk) {
            const size_t c1 = std::min(real_r, c0 + kChunk);
            if (!AnyAtLeast(s + c0, c1 - c0, list.Line())) continue;
            for (size_t j = c0; j < c1; ++j) {
              if (s[j] < list.Line()) continue;
              if (filtered && !params.allowed[r0 + j]) continue;
              list.Offer(s[j], r0 + j);
            }
          }
        }
      });
    }
  }
  std::vector<std::vector<Neighbor>> result(nq);
  ParallelFor(nq, [&](size_t qb, size_t qe) {
    for (size_t q = qb; q < qe; ++q) {
      result[q] = CandidateList::Rerank(&lists[q], &lists[q] + 1, [&](size_t row) {
        return InnerProduct(queries + q * d, table.row(row), d);
      });
    }
  });
  return result;
}

std::vector<std::vector<Neighbor>> ExactSearchBatch(const VectorTable& table, const float* queries,
                                                    size_t nq, const SearchParams& params) {
  const size_t n = table.size();
  const int d = table.dims;
  std::vector<std::vector<Neighbor>> result(nq);
  if (n == 0 || nq == 0 || params.k <= 0) return result;
  if (params.bf16_candidates && nq >= 32 && ChosenBf16Kernel() != Bf16Kernel::kNone) {
    return ExactSearchBatchBf16(table, queries, nq, params, ChosenBf16Kernel());
  }
  UseFastestBlasKernels();
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

namespace {

// Rows of each partition, in row order.
std::map<int, std::vector<size_t>> Partitions(size_t n, const std::vector<int>& partition) {
  std::map<int, std::vector<size_t>> parts;
  for (size_t i = 0; i < n; ++i) parts[partition.empty() ? 0 : partition[i]].push_back(i);
  return parts;
}

// The partition's rows, contiguous.
std::vector<float> Gather(const VectorTable& table, const std::vector<size_t>& rows) {
  const size_t d = static_cast<size_t>(table.dims);
  std::vector<float> block(rows.size() * d);
  for (size_t r = 0; r < rows.size(); ++r) {
    std::copy(table.row(rows[r]), table.row(rows[r]) + d, block.data() + r * d);
  }
  return block;
}

// Visits the m x m similarity matrix of a partition in tiles, only those on and above the
// diagonal (it is symmetric: half the N*N*d*2 FLOPs), each off-diagonal tile feeding both its
// rows' and its columns' lists. product(i0, ni, j0, nj, sims) fills a tile (ni x nj, row
// stride nj; ni and nj are the tile's sizes rounded up to `align`); bar[a] is the similarity
// below which nothing can enter row a's list (kept contiguous so the scans compare a row of
// similarities against an array); offer(a, b, s) offers b to a and updates bar[a]. Two
// workers: one feeds a tile's rows, the other its columns (disjoint lists off the diagonal);
// on the diagonal both feed rows, split in halves.
template <typename Product, typename Offer>
void ScanSymmetricTiles(size_t m, size_t tile, size_t align, const Product& product,
                        const float* bar, const Offer& offer) {
  auto up = [align](size_t x) { return (x + align - 1) / align * align; };
  tile = std::max(align, tile / align * align);
  std::vector<float> sims(up(std::min(tile, m)) * up(std::min(tile, m)));
  for (size_t i0 = 0; i0 < m; i0 += tile) {
    const size_t ni = std::min(tile, m - i0);
    for (size_t j0 = i0; j0 < m; j0 += tile) {
      const size_t nj = std::min(tile, m - j0), ld = up(nj);
      product(i0, up(ni), j0, ld, sims.data());
      const bool diagonal = i0 == j0;
      auto rows_side = [&](size_t begin, size_t end) {
        for (size_t i = begin; i < end; ++i) {
          const float* s = sims.data() + i * ld;
          for (size_t c0 = 0; c0 < nj; c0 += kChunk) {
            const size_t c1 = std::min(nj, c0 + kChunk);
            if (!AnyAtLeast(s + c0, c1 - c0, bar[i0 + i])) continue;
            for (size_t j = c0; j < c1; ++j) {
              if (s[j] < bar[i0 + i] || (diagonal && i == j)) continue;
              offer(i0 + i, j0 + j, s[j]);
            }
          }
        }
      };
      auto columns_side = [&] {
        const float* cb = bar + j0;
        for (size_t i = 0; i < ni; ++i) {
          const float* s = sims.data() + i * ld;
          if (!AnyAtLeastEach(s, cb, nj)) continue;
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
}

// Whether the rules exclude row b of a partition from row a's list (same group).
struct GroupRule {
  const std::vector<int>& group;
  const std::vector<size_t>& rows;
  bool Excludes(size_t a, size_t b) const {
    return !group.empty() && group[rows[a]] >= 0 && group[rows[a]] == group[rows[b]];
  }
};

// Leave-one-out lists of one partition (block: its m rows) by float32 sgemm; rows in the
// answer are partition indices.
std::vector<std::vector<Neighbor>> PartitionNeighbors(const std::vector<float>& block, size_t m,
                                                      int d, int k, const GroupRule& rule,
                                                      size_t tile) {
  UseFastestBlasKernels();
  std::vector<TopK> tops(m, TopK(k));
  std::vector<float> bar(m, -std::numeric_limits<float>::infinity());
  auto product = [&](size_t i0, size_t ni, size_t j0, size_t nj, float* sims) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(ni), static_cast<int>(nj),
                d, 1.0f, block.data() + i0 * d, d, block.data() + j0 * d, d, 0.0f, sims,
                static_cast<int>(nj));
  };
  auto offer = [&](size_t a, size_t b, float sim) {
    if (rule.Excludes(a, b)) return;
    tops[a].Push(1.0f - sim, b);
    bar[a] = tops[a].SimilarityBound();
  };
  ScanSymmetricTiles(m, tile, 1, product, bar.data(), offer);
  std::vector<std::vector<Neighbor>> result(m);
  for (size_t r = 0; r < m; ++r) result[r] = tops[r].Take();
  return result;
}

// The same with bf16 candidates from `kernel` and a float32 re-rank (exact: see
// CandidateMargin).
std::vector<std::vector<Neighbor>> PartitionNeighborsBf16(const std::vector<float>& block, size_t m,
                                                          size_t d, int k, const GroupRule& rule,
                                                          size_t tile, Bf16Kernel kernel,
                                                          float margin_scale) {
  const Bf16Tiles tiles = PackTilesBf16(block.data(), m, d);
  const Bf16Operand a =
      MakeOperand(block.data(), m, d, tiles.padded_dims, tiles.bounds, margin_scale);
  std::vector<CandidateList> lists;
  lists.reserve(m);
  for (size_t r = 0; r < m; ++r) lists.emplace_back(k, a.margin[r]);
  std::vector<float> bar(m, -std::numeric_limits<float>::infinity());
  auto product = [&](size_t i0, size_t ni, size_t j0, size_t nj, float* sims) {
    ParallelGemmBf16(kernel, a, i0, ni, tiles, j0, nj, sims);
  };
  auto offer = [&](size_t x, size_t y, float sim) {
    if (rule.Excludes(x, y)) return;
    lists[x].Offer(sim, y);
    bar[x] = lists[x].Line();
  };
  ScanSymmetricTiles(m, tile, 32, product, bar.data(), offer);
  std::vector<std::vector<Neighbor>> result(m);
  ParallelFor(m, [&](size_t b, size_t e) {
    for (size_t r = b; r < e; ++r) {
      result[r] = CandidateList::Rerank(&lists[r], &lists[r] + 1, [&](size_t other) {
        return InnerProduct(block.data() + r * d, block.data() + other * d, d);
      });
    }
  });
  return result;
}

// Both paths: partitions gathered, solved, and their indices mapped back to table rows.
template <typename Solve>
std::vector<std::vector<Neighbor>> LeaveOneOut(const VectorTable& table,
                                               const std::vector<int>& partition,
                                               const std::vector<int>& group, const Solve& solve) {
  std::vector<std::vector<Neighbor>> result(table.size());
  for (const auto& [key, rows] : Partitions(table.size(), partition)) {
    const std::vector<float> block = Gather(table, rows);
    auto lists = solve(block, rows.size(), GroupRule{group, rows});
    for (size_t r = 0; r < rows.size(); ++r) {
      for (Neighbor& nb : lists[r]) nb.row = rows[nb.row];
      result[rows[r]] = std::move(lists[r]);
    }
  }
  return result;
}

}  // namespace

std::vector<std::vector<Neighbor>> LeaveOneOutNeighborsBf16(const VectorTable& table, int k,
                                                            const std::vector<int>& partition,
                                                            const std::vector<int>& group,
                                                            Bf16Kernel kernel, float margin_scale,
                                                            size_t tile) {
  const size_t d = static_cast<size_t>(table.dims);
  return LeaveOneOut(table, partition, group,
                     [&](const std::vector<float>& block, size_t m, const GroupRule& rule) {
                       return PartitionNeighborsBf16(block, m, d, k, rule, tile, kernel,
                                                     margin_scale);
                     });
}

std::vector<std::vector<Neighbor>> LeaveOneOutNeighbors(const VectorTable& table, int k,
                                                        const std::vector<int>& partition,
                                                        const std::vector<int>& group, size_t tile,
                                                        bool bf16_candidates) {
  if (k <= 0) return std::vector<std::vector<Neighbor>>(table.size());
  const Bf16Kernel kernel = ChosenBf16Kernel();
  const int d = table.dims;
  return LeaveOneOut(table, partition, group,
                     [&](const std::vector<float>& block, size_t m, const GroupRule& rule) {
                       // Small partitions: packing costs more than the faster product saves.
                       if (bf16_candidates && kernel != Bf16Kernel::kNone && m >= 256) {
                         return PartitionNeighborsBf16(block, m, static_cast<size_t>(d), k, rule,
                                                       tile, kernel, 1);
                       }
                       return PartitionNeighbors(block, m, d, k, rule, tile);
                     });
}

}  // namespace nearlabel
