#include "search/bf16_gemm.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>
#include <vector>

#include "search/avx512_intrinsics.h"
#include "search/parallel.h"

namespace nearlabel {
namespace {

constexpr size_t kTileRows = 16;        // rows of a tile (queries, or pairs of dims)
constexpr size_t kTileDims = 32;        // bf16 values per tile row (64 bytes)
constexpr size_t kTileElems = 16 * 32;  // uint16 values per 1 KB tile

// Round to nearest even (vectors are finite: no NaN handling needed).
inline uint16_t ToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float FromBf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The palette-1 tile configuration: 8 tiles of 16 rows x 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

bool CpuHasAvx512Bf16() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512bf16");
}

bool AskForTiles() {
  if (const char* no = std::getenv("NEARLABEL_NO_AMX"); no && *no && *no != '0') return false;
  if (!CpuHasAvx512Bf16()) return false;
  unsigned eax, ebx, ecx, edx;
  __asm__("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(7), "c"(0));
  const bool amx_bf16 = (edx >> 22) & 1, amx_tile = (edx >> 24) & 1;
  if (!amx_bf16 || !amx_tile) return false;
  // Linux hands out the 8 KB tile state only on request (ARCH_REQ_XCOMP_PERM, XTILEDATA).
  constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
}

// Multiply-adds per second of one core on 16 independent accumulators: VDPBF16PS (32 a step)
// and float32 FMA (16). `sink` keeps the loops from being optimised away.
double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
__attribute__((target("avx512f,avx512bw,avx512bf16"))) double Bf16MacRate(long steps, float* sink) {
  __m512 acc[16];
  for (auto& a : acc) a = _mm512_setzero_ps();
  __m512bh x = reinterpret_cast<__m512bh>(_mm512_set1_epi32(0x3f803f80));
  const auto t0 = std::chrono::steady_clock::now();
  for (long s = 0; s < steps; ++s) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], x, x);
    __asm__ volatile("" : "+v"(x));
  }
  const double t = Seconds(t0);
  for (auto& a : acc) *sink += _mm512_reduce_add_ps(a);
  return steps * 16.0 * 32 / t;
}
__attribute__((target("avx512f"))) double Fp32MacRate(long steps, float* sink) {
  __m512 acc[16];
  for (auto& a : acc) a = _mm512_setzero_ps();
  __m512 x = _mm512_set1_ps(1e-20f);
  const auto t0 = std::chrono::steady_clock::now();
  for (long s = 0; s < steps; ++s) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(x, x, acc[i]);
    __asm__ volatile("" : "+v"(x));
  }
  const double t = Seconds(t0);
  for (auto& a : acc) *sink += _mm512_reduce_add_ps(a);
  return steps * 16.0 * 16 / t;
}

Bf16Kernel DefaultKernel() {
  if (Bf16KernelAvailable(Bf16Kernel::kAmx)) return Bf16Kernel::kAmx;
  // AVX512-BF16 only where the core runs it faster than float32 FMA by a margin that pays for
  // the packing, the candidate line and the re-rank: Zen 4/5 do (twice the multiply-adds per
  // instruction at the same rate), while some Intel cores issue VDPBF16PS at half the FMA rate,
  // so bf16 would lose there (measured in ~5 ms, once per process; bench/search prints it).
  if (Bf16KernelAvailable(Bf16Kernel::kAvx512Bf16)) {
    const Bf16Rates rates = MeasureBf16Rates();
    if (rates.bf16_macs >= 1.5 * rates.fp32_macs) return Bf16Kernel::kAvx512Bf16;
  }
  return Bf16Kernel::kNone;
}

// The default, with one line on stderr saying why the forced kernel is not used.
Bf16Kernel FallBack(const char* forced, const char* why) {
  const Bf16Kernel best = DefaultKernel();
  std::fprintf(stderr, "nearlabel: NEARLABEL_BF16_KERNEL=%s %s; using %s\n", forced, why,
               Bf16KernelName(best));
  return best;
}

Bf16Kernel Choose() {
  const char* forced = std::getenv("NEARLABEL_BF16_KERNEL");
  if (!forced || !*forced) return DefaultKernel();
  for (Bf16Kernel k :
       {Bf16Kernel::kNone, Bf16Kernel::kEmulated, Bf16Kernel::kAvx512Bf16, Bf16Kernel::kAmx}) {
    if (std::strcmp(forced, Bf16KernelName(k)) != 0) continue;
    return Bf16KernelAvailable(k) ? k : FallBack(forced, "cannot run on this CPU");
  }
  return FallBack(forced, "is not one of amx, avx512bf16, emulated, off");
}

}  // namespace

const char* Bf16KernelName(Bf16Kernel kernel) {
  switch (kernel) {
    case Bf16Kernel::kAmx:
      return "amx";
    case Bf16Kernel::kAvx512Bf16:
      return "avx512bf16";
    case Bf16Kernel::kEmulated:
      return "emulated";
    case Bf16Kernel::kNone:
      break;
  }
  return "off";
}

bool Bf16KernelAvailable(Bf16Kernel kernel) {
  static const bool avx512bf16 = CpuHasAvx512Bf16();
  static const bool amx = AskForTiles();
  switch (kernel) {
    case Bf16Kernel::kAmx:
      return amx;
    case Bf16Kernel::kAvx512Bf16:
      return avx512bf16;
    case Bf16Kernel::kEmulated:
    case Bf16Kernel::kNone:
      break;
  }
  return true;
}

namespace {
volatile float rate_sink;  // what the rate loops computed, kept so they cannot be dropped
}  // namespace

Bf16Rates MeasureBf16Rates() {
  Bf16Rates r;
  if (!Bf16KernelAvailable(Bf16Kernel::kAvx512Bf16)) return r;
  float sink = 0;                      // (written out below, so the loops cannot be dropped)
  for (int rep = 0; rep < 3; ++rep) {  // best of 3: the first wakes the vector unit up
    r.bf16_macs = std::max(r.bf16_macs, Bf16MacRate(100000, &sink));
    r.fp32_macs = std::max(r.fp32_macs, Fp32MacRate(100000, &sink));
  }
  rate_sink = sink;
  return r;
}

Bf16Kernel ChosenBf16Kernel() {
  static const Bf16Kernel chosen = Choose();
  return chosen;
}

void RowsToBf16(const float* rows, size_t n, size_t d, size_t padded_n, size_t padded_d,
                uint16_t* out, float* norms, float* residuals) {
  std::fill(out, out + padded_n * padded_d, uint16_t{0});
  ParallelFor(n, [&](size_t b, size_t e) {
    for (size_t r = b; r < e; ++r) {
      double norm = 0, res = 0;
      for (size_t i = 0; i < d; ++i) {
        const float x = rows[r * d + i];
        const uint16_t h = ToBf16(x);
        out[r * padded_d + i] = h;
        const double diff = static_cast<double>(x) - FromBf16(h);
        norm += static_cast<double>(x) * x;
        res += diff * diff;
      }
      norms[r] = static_cast<float>(std::sqrt(norm));
      residuals[r] = static_cast<float>(std::sqrt(res));
    }
  });
}

namespace {

// Masks of the two 16-float halves of dims [k0, k0 + 32) of a d-dim row (zeros past d).
struct HalfMasks {
  __mmask16 lo, hi;
};
inline HalfMasks MasksAt(size_t d, size_t k0) {
  const size_t left = d - std::min(d, k0);
  const __mmask16 lo = left >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1);
  const __mmask16 hi = left >= 32   ? 0xFFFF
                       : left <= 16 ? 0
                                    : static_cast<__mmask16>((1u << (left - 16)) - 1);
  return {lo, hi};
}

// The largest squared norm and squared rounding residual of a 16-row block's rows, 32 dims a
// step (AVX512-BF16 rounds to nearest even, as ToBf16).
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void BlockBounds(const float* rows, size_t n,
                                                                        size_t d, size_t blk,
                                                                        size_t ksteps,
                                                                        float* max_norm2,
                                                                        float* max_res2) {
  float best_norm = 0, best_res = 0;
  for (size_t rr = 0; rr < kTileRows; ++rr) {
    const size_t r = blk * kTileRows + rr;
    if (r >= n) break;
    const float* row = rows + r * d;
    __m512 norm = _mm512_setzero_ps(), res = _mm512_setzero_ps();
    for (size_t ks = 0; ks < ksteps; ++ks) {
      const HalfMasks m = MasksAt(d, ks * kTileDims);
      const __m512 lo = _mm512_maskz_loadu_ps(m.lo, row + ks * kTileDims);
      const __m512 hi = _mm512_maskz_loadu_ps(m.hi, row + ks * kTileDims + 16);
      const __m512i b = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo));
      // Back to float (a bf16 is the top half of a float) for the rounding residual.
      const __m512 back_lo = _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(b)), 16));
      const __m512 back_hi = _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(b, 1)), 16));
      const __m512 dlo = _mm512_sub_ps(lo, back_lo), dhi = _mm512_sub_ps(hi, back_hi);
      norm = _mm512_fmadd_ps(lo, lo, _mm512_fmadd_ps(hi, hi, norm));
      res = _mm512_fmadd_ps(dlo, dlo, _mm512_fmadd_ps(dhi, dhi, res));
    }
    best_norm = std::max(best_norm, _mm512_reduce_add_ps(norm));
    best_res = std::max(best_res, _mm512_reduce_add_ps(res));
  }
  *max_norm2 = best_norm;
  *max_res2 = best_res;
}

// Transposes 16 x 16 uint32 in place: r[i] lane j <-> r[j] lane i (unpacks of 32 and 64 bits,
// then two rounds of 128-bit lane shuffles).
__attribute__((target("avx512f"))) inline void Transpose16x16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int h = 0; h < 16; h += 8) {
    for (int i = 0; i < 4; ++i) {
      t[h + i] = _mm512_shuffle_i32x4(r[h + i], r[h + i + 4], 0x88);
      t[h + i + 4] = _mm512_shuffle_i32x4(r[h + i], r[h + i + 4], 0xdd);
    }
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
  }
}

// One 16-row block of the table into its tiles, 32 dims per step: AVX512-BF16 converts each
// row's 32 floats (round to nearest even) into 16 dim-pairs, and a 16 x 16 transpose turns the
// 16 rows' pairs into the tile's 16 lines (the VNNI layout); rows past n and dims past d are
// written as zeros. Why by hand: packing 100k x 1024 on 2 cores took 0.4 s with a scalar loop
// (as long as the products themselves), 0.046 s with a scatter per row and step (slow on
// Zen 4), 0.025 s with this transpose (bounds included; Zen 4, measured in a throwaway
// program around PackTilesBf16; bench/search measures the whole search).
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void WriteBlockTiles(
    const float* rows, size_t n, size_t d, size_t blk, size_t ksteps, uint16_t* data) {
  for (size_t ks = 0; ks < ksteps; ++ks) {
    const HalfMasks m = MasksAt(d, ks * kTileDims);
    __m512i pairs[kTileRows];
    for (size_t rr = 0; rr < kTileRows; ++rr) {
      const size_t r = blk * kTileRows + rr;
      if (r >= n) {
        pairs[rr] = _mm512_setzero_si512();
        continue;
      }
      const float* at = rows + r * d + ks * kTileDims;
      pairs[rr] = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(
          _mm512_maskz_loadu_ps(m.hi, at + 16), _mm512_maskz_loadu_ps(m.lo, at)));
    }
    Transpose16x16(pairs);
    uint16_t* tile = data + (blk * ksteps + ks) * kTileElems;
    for (size_t p = 0; p < kTileRows; ++p) _mm512_store_si512(tile + p * 32, pairs[p]);
  }
}

// BlockBounds and WriteBlockTiles in portable code, for CPUs without AVX512-BF16: the same bits
// (both round to nearest even). In a block, the value of row rr, dim k sits at line k / 2, slot rr,
// half k % 2.
template <bool kWrite>
void PackBlockGeneric(const float* rows, size_t n, size_t d, size_t blk, size_t ksteps,
                      uint16_t* data, float* max_norm2, float* max_res2) {
  uint16_t* block = kWrite ? data + blk * ksteps * kTileElems : nullptr;
  double best_norm = 0, best_res = 0;
  for (size_t rr = 0; rr < kTileRows; ++rr) {
    const size_t r = blk * kTileRows + rr;
    if (r >= n) break;
    double norm = 0, res = 0;
    for (size_t k = 0; k < d; ++k) {
      const float x = rows[r * d + k];
      const uint16_t h = ToBf16(x);
      if (kWrite) block[(k / 2) * 32 + rr * 2 + (k & 1)] = h;
      const double diff = static_cast<double>(x) - FromBf16(h);
      norm += static_cast<double>(x) * x;
      res += diff * diff;
    }
    best_norm = std::max(best_norm, norm);
    best_res = std::max(best_res, res);
  }
  *max_norm2 = static_cast<float>(best_norm);
  *max_res2 = static_cast<float>(best_res);
}

// Whether packing uses AVX512-BF16: where the CPU has it, unless NEARLABEL_BF16_KERNEL=emulated
// asks for portable code throughout (so the portable packer is tested on such CPUs too).
bool VectorPacker() {
  static const bool vector =
      Bf16KernelAvailable(Bf16Kernel::kAvx512Bf16) && ChosenBf16Kernel() != Bf16Kernel::kEmulated;
  return vector;
}

// Every 16-row block of n x d rows through block(blk, max_norm2, max_res2) on every core;
// returns the bounds (the largest row norm and residual norm, with 1% to spare: float sums of
// squares are within 1e-4, relative, for any d here).
template <typename Block>
Bf16Bounds ForEachBlock(size_t n, const Block& block) {
  const size_t blocks = (n + 31) / 32 * 32 / kTileRows;
  std::vector<float> norm2(blocks), res2(blocks);
  ParallelFor(blocks, [&](size_t b, size_t e) {
    for (size_t blk = b; blk < e; ++blk) block(blk, &norm2[blk], &res2[blk]);
  });
  Bf16Bounds bounds;
  for (size_t blk = 0; blk < blocks; ++blk) {
    bounds.max_norm = std::max(bounds.max_norm, norm2[blk]);
    bounds.max_residual = std::max(bounds.max_residual, res2[blk]);
  }
  bounds.max_norm = 1.01f * std::sqrt(bounds.max_norm);
  bounds.max_residual = 1.01f * std::sqrt(bounds.max_residual);
  return bounds;
}

}  // namespace

Bf16Bounds BoundsBf16(const float* rows, size_t n, size_t d) {
  const size_t ksteps = Bf16PaddedDims(d) / kTileDims;
  const bool vector_unit = VectorPacker();
  return ForEachBlock(n, [&](size_t blk, float* norm2, float* res2) {
    if (vector_unit) {
      BlockBounds(rows, n, d, blk, ksteps, norm2, res2);
    } else {
      PackBlockGeneric<false>(rows, n, d, blk, ksteps, nullptr, norm2, res2);
    }
  });
}

void PackTilesBf16(const float* rows, size_t n, size_t d, Bf16Tiles* tiles,
                   const Bf16Bounds* known) {
  Bf16Tiles& t = *tiles;
  t.rows = n;
  t.dims = d;
  t.padded_rows = (n + 31) / 32 * 32;
  t.padded_dims = Bf16PaddedDims(d);
  const size_t ksteps = t.padded_dims / kTileDims;
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t bytes =
      (t.padded_rows * t.padded_dims * sizeof(uint16_t) + kHuge - 1) / kHuge * kHuge;
  if (bytes > t.capacity_bytes) {
    t.data.reset(static_cast<uint16_t*>(std::aligned_alloc(kHuge, bytes)));
    if (!t.data) throw std::bad_alloc();
    t.capacity_bytes = bytes;
    ::madvise(t.data.get(), bytes, MADV_HUGEPAGE);  // fewer page faults while it is written
  }
  const bool vector_unit = VectorPacker();
  t.bounds = ForEachBlock(n, [&](size_t blk, float* norm2, float* res2) {
    if (vector_unit) {
      if (!known) BlockBounds(rows, n, d, blk, ksteps, norm2, res2);
      WriteBlockTiles(rows, n, d, blk, ksteps, t.data.get());
    } else {
      // The generic packer writes only real rows and dims: the rest must be zeros.
      if ((blk + 1) * kTileRows > n || d != t.padded_dims) {
        uint16_t* first = t.data.get() + blk * ksteps * kTileElems;
        std::fill(first, first + ksteps * kTileElems, uint16_t{0});
      }
      PackBlockGeneric<true>(rows, n, d, blk, ksteps, t.data.get(), norm2, res2);
    }
  });
  if (known) t.bounds = *known;
}

Bf16Tiles PackTilesBf16(const float* rows, size_t n, size_t d) {
  Bf16Tiles t;
  PackTilesBf16(rows, n, d, &t, nullptr);
  return t;
}

namespace {

// A 32 x 32 block of c at a time in four accumulator tiles (0-3), fed by two tiles of query
// rows (4, 5) and two of table rows (6, 7) per 32 dims: 4 TDPBF16PS per 4 tile loads.

__attribute__((target("amx-tile,amx-bf16"))) void AmxGemm(const uint16_t* a, size_t m,
                                                          const Bf16Tiles& b, size_t r0, size_t nb,
                                                          float* c, size_t ldc) {
  TileConfig cfg;
  for (int i = 0; i < 8; ++i) {
    cfg.rows[i] = 16;
    cfg.colsb[i] = 64;
  }
  _tile_loadconfig(&cfg);
  const size_t d = b.padded_dims, ksteps = d / kTileDims;
  const size_t lda = d * sizeof(uint16_t), ldcb = ldc * sizeof(float);
  for (size_t i = 0; i < m; i += 32) {
    const uint16_t* a0 = a + i * d;
    const uint16_t* a1 = a0 + 16 * d;
    for (size_t j = 0; j < nb; j += 32) {
      const uint16_t* b0 = b.data.get() + ((r0 + j) / kTileRows) * ksteps * kTileElems;
      const uint16_t* b1 = b0 + ksteps * kTileElems;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (size_t k = 0; k < ksteps; ++k) {
        _tile_loadd(4, a0 + k * kTileDims, lda);
        _tile_loadd(5, a1 + k * kTileDims, lda);
        _tile_loadd(6, b0 + k * kTileElems, 64);
        _tile_loadd(7, b1 + k * kTileElems, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      float* out = c + i * ldc + j;
      _tile_stored(0, out, ldcb);
      _tile_stored(1, out + 16, ldcb);
      _tile_stored(2, out + 16 * ldc, ldcb);
      _tile_stored(3, out + 16 * ldc + 16, ldcb);
    }
  }
  _tile_release();
}

// Eight queries x 32 table rows at a time in 16 accumulators: per pair of dims, two 64-byte
// lines of the table block (16 rows each) and eight broadcast query pairs feed 16 VDPBF16PS.
// The 32-row block (64 KB at 1024 dims) stays in L2 while every query passes over it.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void Avx512Bf16Gemm(
    const uint16_t* a, size_t m, const Bf16Tiles& b, size_t r0, size_t nb, float* c, size_t ldc) {
  const size_t d = b.padded_dims, ksteps = d / kTileDims, pairs = d / 2;
  constexpr size_t kQ = 8;
  for (size_t j = 0; j < nb; j += 32) {
    const uint16_t* b0 = b.data.get() + ((r0 + j) / kTileRows) * ksteps * kTileElems;
    const uint16_t* b1 = b0 + ksteps * kTileElems;
    for (size_t i = 0; i < m; i += kQ) {
      const uint32_t* q = reinterpret_cast<const uint32_t*>(a + i * d);  // pair P of query t:
      __m512 acc0[kQ], acc1[kQ];                                         // q[t * pairs + P]
      for (size_t t = 0; t < kQ; ++t) acc0[t] = acc1[t] = _mm512_setzero_ps();
      for (size_t p = 0; p < pairs; ++p) {
        const __m512bh x0 = reinterpret_cast<__m512bh>(_mm512_load_si512(b0 + p * 32));
        const __m512bh x1 = reinterpret_cast<__m512bh>(_mm512_load_si512(b1 + p * 32));
        for (size_t t = 0; t < kQ; ++t) {
          const __m512bh y =
              reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(q[t * pairs + p])));
          acc0[t] = _mm512_dpbf16_ps(acc0[t], y, x0);
          acc1[t] = _mm512_dpbf16_ps(acc1[t], y, x1);
        }
      }
      for (size_t t = 0; t < kQ; ++t) {
        _mm512_storeu_ps(c + (i + t) * ldc + j, acc0[t]);
        _mm512_storeu_ps(c + (i + t) * ldc + j + 16, acc1[t]);
      }
    }
  }
}

// The same products in portable code: each bf16 product is exact in float32 (8-bit
// mantissas), summed in float32 as the vector kernels do (in another order, which the error
// bound's float32 sum term covers).
void EmulatedGemm(const uint16_t* a, size_t m, const Bf16Tiles& b, size_t r0, size_t nb, float* c,
                  size_t ldc) {
  const size_t d = b.padded_dims, ksteps = d / kTileDims;
  for (size_t j = 0; j < nb; ++j) {
    const size_t r = r0 + j;
    const uint16_t* block = b.data.get() + (r / kTileRows) * ksteps * kTileElems;
    const size_t slot = (r % kTileRows) * 2;
    for (size_t i = 0; i < m; ++i) {
      const uint16_t* q = a + i * d;
      float s = 0;
      for (size_t k = 0; k < d; ++k) {
        s += FromBf16(q[k]) * FromBf16(block[(k / 2) * 32 + slot + (k & 1)]);
      }
      c[i * ldc + j] = s;
    }
  }
}

}  // namespace

void GemmBf16(Bf16Kernel kernel, const uint16_t* a, size_t m, const Bf16Tiles& b, size_t r0,
              size_t nb, float* c, size_t ldc) {
  switch (kernel) {
    case Bf16Kernel::kAmx:
      return AmxGemm(a, m, b, r0, nb, c, ldc);
    case Bf16Kernel::kAvx512Bf16:
      return Avx512Bf16Gemm(a, m, b, r0, nb, c, ldc);
    case Bf16Kernel::kEmulated:
    case Bf16Kernel::kNone:  // (callers never pass it; emulation is the safe answer)
      break;
  }
  EmulatedGemm(a, m, b, r0, nb, c, ldc);
}

}  // namespace nearlabel
