// Matrix products of bfloat16 copies, the candidate step of exact search (exact_search.cc
// re-ranks the candidates in float32 and proves they hold the exact top k). Three kernels of
// one contract, chosen at run time:
//  - AMX (Sapphire Rapids and later): 16 x 16 x 32 multiply-adds per tile instruction;
//  - AVX512-BF16 (Cooper Lake, Sapphire Rapids, Zen 4/5): VDPBF16PS, 32 multiply-adds per
//    instruction against 16 for float32 FMA;
//  - emulated: the same products in portable scalar code, so the bf16 margin logic is tested
//    on every CPU (slow: tests only, never chosen by default).
// Why by hand: Debian's OpenBLAS 0.3.21 has no bf16 GEMM (cblas_sbgemm) and its kernels use
// neither AMX nor VDPBF16PS; bench/search measures each kernel against FAISS and our sgemm
// path in the same run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

namespace nearlabel {

enum class Bf16Kernel { kNone, kEmulated, kAvx512Bf16, kAmx };

// "off", "emulated", "avx512bf16", "amx".
const char* Bf16KernelName(Bf16Kernel kernel);

// Whether `kernel` can run here: AMX needs AMX-BF16 and the OS's leave to use the tile
// registers (asked once, process-wide), AVX512-BF16 needs avx512f/bw/bf16; emulated and none
// always run. Thread-safe.
bool Bf16KernelAvailable(Bf16Kernel kernel);

// Multiply-adds per second one core reaches with VDPBF16PS and with float32 FMA, measured on
// registers (both 0 without AVX512-BF16). Takes ~5 ms. Thread-safe.
struct Bf16Rates {
  double bf16_macs = 0, fp32_macs = 0;
};
Bf16Rates MeasureBf16Rates();

// The kernel exact search uses for candidates: AMX where available, then AVX512-BF16 where
// MeasureBf16Rates finds it at least 1.5x float32 FMA, else kNone (float32 sgemm).
// NEARLABEL_BF16_KERNEL=amx|avx512bf16|emulated|off forces one (a forced kernel this CPU lacks
// falls back to the default, with one line on stderr); NEARLABEL_NO_AMX=1 (older name) rules AMX
// out. Read once, process-wide. Thread-safe.
Bf16Kernel ChosenBf16Kernel();

// Largest row norm and largest rounding-residual norm ||x - bf16(x)|| over a matrix's rows
// (1% to spare): the inputs of the error bound (exact_search.cc).
struct Bf16Bounds {
  float max_norm = 0, max_residual = 0;
};

// Rows of a float matrix in the layout GemmBf16 reads: rows padded to a multiple of 32, dims
// to a multiple of 32 (with zeros), each 16-row x 32-dim block stored as one 1 KB tile with
// pairs of dims interleaved (the "VNNI" layout TDPBF16PS wants for its second operand). A
// block's 64-byte lines, one per pair of dims, follow each other through all the dims: each is
// the 16 rows' values of one pair, what VDPBF16PS multiplies by a broadcast query pair.
struct Bf16Tiles {
  size_t rows = 0, padded_rows = 0;
  size_t dims = 0, padded_dims = 0;
  // 2 MB-aligned and advised onto huge pages (200 MB for a 100k x 1024 leave-one-out
  // partition; batched search packs one 4096-row block at a time).
  std::unique_ptr<uint16_t[], decltype(&std::free)> data{nullptr, &std::free};
  size_t capacity_bytes = 0;  // of data, which a repack reuses when large enough
  Bf16Bounds bounds;
};

// The dims of a packed row: d rounded up to a multiple of 32 (zeros past d).
inline size_t Bf16PaddedDims(size_t d) { return (d + 31) / 32 * 32; }

// Converts n x d floats (round to nearest even). Thread-safe; uses every core. Uses
// AVX512-BF16 when the CPU has it, portable code otherwise or under
// NEARLABEL_BF16_KERNEL=emulated (the same bits either way).
Bf16Tiles PackTilesBf16(const float* rows, size_t n, size_t d);
// The same into `tiles`, reusing its buffer when it is large enough: batched search packs a
// table one 4096-row block at a time into one 8 MB buffer, where a fresh 200 MB a call cost
// more than the packing on a virtual machine that hands freed memory back to its host
// (0.25 s against 0.05 s after a second idle: bench/search). `known`, when given, is a bound
// that holds for these rows (the whole table's BoundsBf16): tiles->bounds gets it and the rows
// are not measured again.
void PackTilesBf16(const float* rows, size_t n, size_t d, Bf16Tiles* tiles,
                   const Bf16Bounds* known);
// The bounds of n x d floats, as PackTilesBf16 sets them (without packing): the error bound of
// a table packed block by block. Uses every core.
Bf16Bounds BoundsBf16(const float* rows, size_t n, size_t d);

// Row-major bf16 copy of n x d floats padded to padded_n x padded_d (zeros), the first
// operand's layout; norms[i] and residuals[i] get row i's norm and rounding-residual norm.
void RowsToBf16(const float* rows, size_t n, size_t d, size_t padded_n, size_t padded_d,
                uint16_t* out, float* norms, float* residuals);

// c[i][j] = dot(a row i, b row r0 + j), products of bf16 values summed in float32, for i < m,
// j < nb; m, r0 and nb are multiples of 32, a is row-major with padded_dims columns.
// `kernel` must be available and not kNone. Thread-safe for disjoint outputs (AMX: each
// calling thread configures its own tiles).
void GemmBf16(Bf16Kernel kernel, const uint16_t* a, size_t m, const Bf16Tiles& b, size_t r0,
              size_t nb, float* c, size_t ldc);

}  // namespace nearlabel
