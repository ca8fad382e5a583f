// Exact k-nearest-neighbour search by cosine distance over unit-length vectors
// (distance = 1 - dot product), computed with BLAS: sgemv for one query, blocked sgemm for
// many. Ties are broken by the lower row, so results are deterministic.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nearlabel/store.h"

namespace nearlabel {

struct Neighbor {
  size_t row = 0;  // row in the VectorTable searched
  float distance = 0;
  bool operator==(const Neighbor& o) const { return row == o.row && distance == o.distance; }
};

// Per-query parameters.
struct SearchParams {
  int k = 10;
  // Optional row filter: when non-empty, only rows with allowed[row] != 0 are candidates.
  std::vector<uint8_t> allowed;
  // ExactSearchBatch only: on a CPU with AMX-BF16 or AVX512-BF16, find candidates with a
  // bfloat16 matrix product and re-rank them in float32 (the same neighbours as the float32
  // path: the candidate line has a proven error margin; see exact_search.cc). false: float32
  // sgemm.
  bool bf16_candidates = true;
};

// Rows that someone else owns (a VectorTable, a memory-mapped segment): row-major, rows x dims.
struct MatrixView {
  const float* data = nullptr;
  size_t rows = 0;
  int dims = 0;
};

// ExactSearch over a MatrixView (`params.allowed`, when set, has one byte per row).
std::vector<Neighbor> ExactSearch(const MatrixView& rows, const float* query,
                                  const SearchParams& params);

// A half-precision (IEEE binary16) copy of a MatrixView's rows for single-query scans: half
// the bytes to read, which is what a scan of a table larger than the caches waits for.
struct HalfRows {
  std::vector<uint16_t> data;  // rows x dims
  size_t rows = 0;
  int dims = 0;
  // Largest row norm and largest rounding-residual norm ||x - half(x)||: the error bound's
  // inputs.
  float max_norm = 0, max_residual = 0;
};

// Converts every row (round to nearest even). Thread-safe; uses every core.
HalfRows MakeHalfRows(const MatrixView& rows);

// ExactSearch with candidates from `half` (a copy of `rows`) and every candidate re-ranked in
// float32 from `rows`: the same neighbours and distances as ExactSearch over `rows` (the
// candidate line has a proven margin, as the bf16 path's), reading half the bytes.
std::vector<Neighbor> ExactSearch(const MatrixView& rows, const HalfRows& half, const float* query,
                                  const SearchParams& params);

// The k nearest rows of `table` to `query` (dims floats, unit length), nearest first.
// Returns fewer than k only when fewer rows are allowed. Thread-safe (read-only on table).
std::vector<Neighbor> ExactSearch(const VectorTable& table, const float* query,
                                  const SearchParams& params);

// ExactSearch for nq queries (row-major nq x dims) at once: blocked sgemm of query blocks
// against row blocks, the per-query top k kept across blocks. Thread-safe (read-only).
std::vector<std::vector<Neighbor>> ExactSearchBatch(const VectorTable& table, const float* queries,
                                                    size_t nq, const SearchParams& params);

// Leave-one-out neighbours: for every row i, the k nearest rows j != i with
// partition[j] == partition[i] and (group[i] < 0 or group[j] != group[i]).
// `partition` and `group` are per-row integer keys (empty vectors: one partition / no groups).
// Computes the similarity matrix in tiles with sgemm within each partition, never N scans,
// and only the tiles on and above the diagonal (the matrix is symmetric): half the N*N*d*2
// FLOPs of a full product. `tile`: rows per sgemm tile (4096: 64 MB of similarities).
// bf16_candidates: as SearchParams's, for partitions of 256 rows or more (distances are then
// float32 dot products of the two rows instead of sgemm's, equal up to float32 rounding).
std::vector<std::vector<Neighbor>> LeaveOneOutNeighbors(const VectorTable& table, int k,
                                                        const std::vector<int>& partition,
                                                        const std::vector<int>& group,
                                                        size_t tile = 4096,
                                                        bool bf16_candidates = true);

}  // namespace nearlabel
