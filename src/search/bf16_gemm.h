// Matrix products of bfloat16 copies on the CPU's AMX tile unit (Sapphire Rapids and later):
// 16 x 16 x 32 multiply-adds per instruction, several times what float32 FMA (and so
// OpenBLAS sgemm) reaches on the same cores. Exact search uses it to find candidates, which it
// then re-ranks in float32 (exact_search.cc proves the candidates hold the exact top k).
// Why by hand: Debian's OpenBLAS 0.3.21 has no bf16 GEMM (cblas_sbgemm) and its kernels use
// no AMX; bench/search measures the gain against FAISS and our sgemm path in the same run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

namespace nearlabel {

// True when the CPU has AMX-BF16 and the kernel lets this process use the tile registers
// (asked once, process-wide). NEARLABEL_NO_AMX=1 forces false. Thread-safe.
bool AmxBf16Available();

// Rows of a float matrix in the tile layout AmxGemm reads: rows padded to a multiple of 32,
// dims to a multiple of 32 (with zeros), each 16-row x 32-dim block stored as one 1 KB tile
// with pairs of dims interleaved (the "VNNI" layout TDPBF16PS wants for its second operand).
struct Bf16Tiles {
  size_t rows = 0, padded_rows = 0;
  size_t dims = 0, padded_dims = 0;
  // 2 MB-aligned and advised onto huge pages: 200 MB for 100k x 1024, written once per search.
  std::unique_ptr<uint16_t[], decltype(&std::free)> data{nullptr, &std::free};
  // Largest row norm and largest rounding-residual norm ||x - bf16(x)|| over the rows: the
  // inputs of the error bound.
  float max_norm = 0, max_residual = 0;
};

// Converts n x d floats (round to nearest even). Thread-safe; uses every core.
Bf16Tiles PackTilesBf16(const float* rows, size_t n, size_t d);

// Row-major bf16 copy of n x d floats padded to padded_n x padded_d (zeros), the first
// operand's layout; norms[i] and residuals[i] get row i's norm and rounding-residual norm.
void RowsToBf16(const float* rows, size_t n, size_t d, size_t padded_n, size_t padded_d,
                uint16_t* out, float* norms, float* residuals);

// c[i][j] = dot(a row i, b row r0 + j) in float32 for i < m, j < nb; m, r0 and nb are
// multiples of 32, a is row-major with padded_dims columns. Needs AmxBf16Available(). Each
// calling thread configures its own tiles. Thread-safe for disjoint outputs.
void AmxGemmBf16(const uint16_t* a, size_t m, const Bf16Tiles& b, size_t r0, size_t nb, float* c,
                 size_t ldc);

}  // namespace nearlabel
