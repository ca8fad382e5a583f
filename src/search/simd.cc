#include "search/simd.h"

#include <cstdlib>
#include <cstring>

#include "search/avx512_intrinsics.h"

namespace nearlabel {
namespace {

// Four accumulators hide the FMA latency; the tail is scalar.
float InnerProductGeneric(const float* a, const float* b, size_t d) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= d; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < d; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

// IEEE binary16 conversions, round to nearest even (the generic path; AVX-512 converts 16 at
// once below).
uint16_t HalfFromFloat(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t exp = (x >> 23) & 0xffu;
  const uint32_t mant = x & 0x7fffffu;
  if (exp == 0xff) return static_cast<uint16_t>(sign | 0x7c00u | (mant ? 0x200u : 0u));
  const int e = static_cast<int>(exp) - 127 + 15;
  if (e >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
  if (e <= 0) {  // a half subnormal (or zero): m * 2^-24
    const int shift = 14 - e;
    if (shift > 24) return static_cast<uint16_t>(sign);
    const uint32_t full = mant | 0x800000u;
    uint32_t m = full >> shift;
    const uint32_t rem = full & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (m & 1u))) ++m;
    return static_cast<uint16_t>(sign | m);
  }
  uint32_t h = sign | (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is right
  return static_cast<uint16_t>(h);
}

float FloatFromHalf(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) return (sign ? -1.0f : 1.0f) * static_cast<float>(m) * 5.9604644775390625e-8f;
  const uint32_t x =
      e == 31 ? (sign | 0x7f800000u | (m << 13)) : (sign | ((e + 112) << 23) | (m << 13));
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

void FloatToHalfGeneric(const float* in, uint16_t* out, size_t d) {
  for (size_t i = 0; i < d; ++i) out[i] = HalfFromFloat(in[i]);
}
void HalfToFloatGeneric(const uint16_t* in, float* out, size_t d) {
  for (size_t i = 0; i < d; ++i) out[i] = FloatFromHalf(in[i]);
}
float InnerProductHalfGeneric(const float* a, const uint16_t* b, size_t d) {
  float s0 = 0, s1 = 0;
  size_t i = 0;
  for (; i + 2 <= d; i += 2) {
    s0 += a[i] * FloatFromHalf(b[i]);
    s1 += a[i + 1] * FloatFromHalf(b[i + 1]);
  }
  for (; i < d; ++i) s0 += a[i] * FloatFromHalf(b[i]);
  return s0 + s1;
}
float InnerProductHalfHalfGeneric(const uint16_t* a, const uint16_t* b, size_t d) {
  float s = 0;
  for (size_t i = 0; i < d; ++i) s += FloatFromHalf(a[i]) * FloatFromHalf(b[i]);
  return s;
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) __m512 LoadHalf16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

__attribute__((target("avx512f"))) void FloatToHalfAvx512(const float* in, uint16_t* out,
                                                          size_t d) {
  size_t i = 0;
  for (; i + 16 <= d; i += 16) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                        _mm512_cvtps_ph(_mm512_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT));
  }
  FloatToHalfGeneric(in + i, out + i, d - i);
}

__attribute__((target("avx512f"))) void HalfToFloatAvx512(const uint16_t* in, float* out,
                                                          size_t d) {
  size_t i = 0;
  for (; i + 16 <= d; i += 16) _mm512_storeu_ps(out + i, LoadHalf16(in + i));
  HalfToFloatGeneric(in + i, out + i, d - i);
}

// 16 lanes as floats, from floats or from halves: the three dot products differ only there.
__attribute__((target("avx512f"))) inline __m512 Load16(const float* p) {
  return _mm512_loadu_ps(p);
}
__attribute__((target("avx512f"))) inline __m512 Load16(const uint16_t* p) { return LoadHalf16(p); }

float DotGeneric(const float* a, const float* b, size_t d) { return InnerProductGeneric(a, b, d); }
float DotGeneric(const float* a, const uint16_t* b, size_t d) {
  return InnerProductHalfGeneric(a, b, d);
}
float DotGeneric(const uint16_t* a, const uint16_t* b, size_t d) {
  return InnerProductHalfHalfGeneric(a, b, d);
}

// Two accumulators over 32 lanes a step; a tail shorter than 16 goes to the generic code.
template <typename A, typename B>
__attribute__((target("avx512f"))) float DotAvx512(const A* a, const B* b, size_t d) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= d; i += 32) {
    acc0 = _mm512_fmadd_ps(Load16(a + i), Load16(b + i), acc0);
    acc1 = _mm512_fmadd_ps(Load16(a + i + 16), Load16(b + i + 16), acc1);
  }
  if (i + 16 <= d) {
    acc0 = _mm512_fmadd_ps(Load16(a + i), Load16(b + i), acc0);
    i += 16;
  }
  const float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  return i < d ? sum + DotGeneric(a + i, b + i, d - i) : sum;
}

float InnerProductHalfAvx512(const float* a, const uint16_t* b, size_t d) {
  return DotAvx512(a, b, d);
}
float InnerProductHalfHalfAvx512(const uint16_t* a, const uint16_t* b, size_t d) {
  return DotAvx512(a, b, d);
}

void InnerProductHalf4Generic(const float* a, const uint16_t* const b[4], size_t d, float out[4]) {
  for (int j = 0; j < 4; ++j) out[j] = InnerProductHalfGeneric(a, b[j], d);
}

__attribute__((target("avx512f"))) void InnerProductHalf4Avx512(const float* a,
                                                                const uint16_t* const b[4],
                                                                size_t d, float out[4]) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  __m512 acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= d; i += 16) {
    const __m512 q = _mm512_loadu_ps(a + i);
    acc0 = _mm512_fmadd_ps(q, LoadHalf16(b[0] + i), acc0);
    acc1 = _mm512_fmadd_ps(q, LoadHalf16(b[1] + i), acc1);
    acc2 = _mm512_fmadd_ps(q, LoadHalf16(b[2] + i), acc2);
    acc3 = _mm512_fmadd_ps(q, LoadHalf16(b[3] + i), acc3);
  }
  out[0] = _mm512_reduce_add_ps(acc0);
  out[1] = _mm512_reduce_add_ps(acc1);
  out[2] = _mm512_reduce_add_ps(acc2);
  out[3] = _mm512_reduce_add_ps(acc3);
  if (i < d) {
    for (int j = 0; j < 4; ++j) out[j] += InnerProductHalfGeneric(a + i, b[j] + i, d - i);
  }
}

float InnerProductAvx512(const float* a, const float* b, size_t d) { return DotAvx512(a, b, d); }

// Four rows a step, one 64-byte line of each per iteration (16 floats or 32 halves, the latter
// in two accumulators). Each iteration also asks for the same line of the next step's four
// rows, into L2: a whole step ahead, so every line of every row is on its way before it is
// read. (Prefetching 1 KB ahead within each row into L1, as before, left each row's first 1 KB
// to the hardware prefetcher, which follows four streams poorly on Zen 4: the scan read at
// 64 % of the machine's rate there and the half copy gained only 1.4x; bench/search.) The tail
// of a row past the last whole line goes to the generic code.
// One row's sum from its accumulators and its tail, in the same order for every row.
template <typename T, size_t kSplit>
__attribute__((target("avx512f"))) float FinishRow(const __m512* acc, const T* row, const float* q,
                                                   size_t body, size_t d) {
  __m512 all = acc[0];
  for (size_t k = 1; k < kSplit; ++k) all = _mm512_add_ps(all, acc[k]);
  float v = _mm512_reduce_add_ps(all);
  if (body < d) v += DotGeneric(q + body, row + body, d - body);
  return v;
}

template <typename T>
__attribute__((target("avx512f"))) void DotRowsAvx512(const T* rows, size_t n, size_t d,
                                                      const float* q, float* out) {
  constexpr size_t kSplit = 64 / sizeof(T) / 16, kLine = 16 * kSplit;
  const size_t body = d / kLine * kLine;
  size_t r = 0;
  for (; body > 0 && r + 4 <= n; r += 4) {
    const T* row[4] = {rows + r * d, rows + (r + 1) * d, rows + (r + 2) * d, rows + (r + 3) * d};
    __m512 acc[4][kSplit];
    for (auto& a : acc)
      for (auto& x : a) x = _mm512_setzero_ps();
    const bool next_step = r + 8 <= n;  // (only rows of this call: no reads past them)
    for (size_t i = 0; i < body; i += kLine) {
      for (size_t j = 0; next_step && j < 4; ++j) {
        _mm_prefetch(reinterpret_cast<const char*>(row[j] + 4 * d + i), _MM_HINT_T1);
      }
      for (size_t k = 0; k < kSplit; ++k) {
        const __m512 x = _mm512_loadu_ps(q + i + 16 * k);
        for (size_t j = 0; j < 4; ++j) {
          acc[j][k] = _mm512_fmadd_ps(x, Load16(row[j] + i + 16 * k), acc[j][k]);
        }
      }
    }
    for (size_t j = 0; j < 4; ++j) out[r + j] = FinishRow<T, kSplit>(acc[j], row[j], q, body, d);
  }
  // The last rows (and rows shorter than a line) with the same arithmetic as the four-row
  // step, so that a row's value never depends on its position (a re-rank calls this with
  // n = 1 and gets the scan's number, bit for bit).
  for (; r < n; ++r) {
    const T* row = rows + r * d;
    __m512 acc[kSplit];
    for (auto& x : acc) x = _mm512_setzero_ps();
    for (size_t i = 0; i < body; i += kLine) {
      for (size_t k = 0; k < kSplit; ++k) {
        acc[k] = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 16 * k), Load16(row + i + 16 * k), acc[k]);
      }
    }
    out[r] = FinishRow<T, kSplit>(acc, row, q, body, d);
  }
}
#endif

bool AnyAtLeastGeneric(const float* s, size_t n, float bound) {
  bool any = false;
  for (size_t j = 0; j < n; ++j) any |= s[j] >= bound;
  return any;
}
bool AnyAtLeastEachGeneric(const float* s, const float* bounds, size_t n) {
  bool any = false;
  for (size_t j = 0; j < n; ++j) any |= s[j] >= bounds[j];
  return any;
}

#if defined(__x86_64__)
// 16 comparisons an instruction (GCC leaves the generic loops scalar at the default -O3
// target: 2-4% of a batched search's time went there; bench/search).
__attribute__((target("avx512f"))) bool AnyAtLeastAvx512(const float* s, size_t n, float bound) {
  const __m512 b = _mm512_set1_ps(bound);
  __mmask16 any = 0;
  size_t j = 0;
  for (; j + 16 <= n; j += 16) any |= _mm512_cmp_ps_mask(_mm512_loadu_ps(s + j), b, _CMP_GE_OQ);
  if (j < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - j)) - 1);
    any |= _mm512_mask_cmp_ps_mask(m, _mm512_maskz_loadu_ps(m, s + j), b, _CMP_GE_OQ);
  }
  return any != 0;
}
__attribute__((target("avx512f"))) bool AnyAtLeastEachAvx512(const float* s, const float* bounds,
                                                             size_t n) {
  __mmask16 any = 0;
  size_t j = 0;
  for (; j + 16 <= n; j += 16) {
    any |= _mm512_cmp_ps_mask(_mm512_loadu_ps(s + j), _mm512_loadu_ps(bounds + j), _CMP_GE_OQ);
  }
  if (j < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - j)) - 1);
    any |= _mm512_mask_cmp_ps_mask(m, _mm512_maskz_loadu_ps(m, s + j),
                                   _mm512_maskz_loadu_ps(m, bounds + j), _CMP_GE_OQ);
  }
  return any != 0;
}
#endif

void DotRowsGeneric(const float* rows, size_t n, size_t d, const float* q, float* out) {
  for (size_t r = 0; r < n; ++r) out[r] = InnerProductGeneric(q, rows + r * d, d);
}
void DotRowsHalfGeneric(const uint16_t* rows, size_t n, size_t d, const float* q, float* out) {
  for (size_t r = 0; r < n; ++r) out[r] = InnerProductHalfGeneric(q, rows + r * d, d);
}

struct Kernels {
  float (*dot)(const float*, const float*, size_t) = InnerProductGeneric;
  float (*dot_half)(const float*, const uint16_t*, size_t) = InnerProductHalfGeneric;
  float (*dot_half_half)(const uint16_t*, const uint16_t*, size_t) = InnerProductHalfHalfGeneric;
  void (*dot_half4)(const float*, const uint16_t* const[4], size_t,
                    float[4]) = InnerProductHalf4Generic;
  void (*to_half)(const float*, uint16_t*, size_t) = FloatToHalfGeneric;
  void (*to_float)(const uint16_t*, float*, size_t) = HalfToFloatGeneric;
  void (*dot_rows)(const float*, size_t, size_t, const float*, float*) = DotRowsGeneric;
  void (*dot_rows_half)(const uint16_t*, size_t, size_t, const float*, float*) = DotRowsHalfGeneric;
  bool (*any_at_least)(const float*, size_t, float) = AnyAtLeastGeneric;
  bool (*any_at_least_each)(const float*, const float*, size_t) = AnyAtLeastEachGeneric;
  const char* name = "generic";
};

// NEARLABEL_SIMD_KERNEL=generic forces the portable kernels (to test and measure them on a
// CPU with AVX-512).
Kernels Choose() {
  Kernels k;
  const char* forced = std::getenv("NEARLABEL_SIMD_KERNEL");
  if (forced && std::strcmp(forced, "generic") == 0) return k;
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx512f")) {
    k.dot = InnerProductAvx512;
    k.dot_half = InnerProductHalfAvx512;
    k.dot_half_half = InnerProductHalfHalfAvx512;
    k.dot_half4 = InnerProductHalf4Avx512;
    k.to_half = FloatToHalfAvx512;
    k.to_float = HalfToFloatAvx512;
    k.dot_rows = DotRowsAvx512<float>;
    k.dot_rows_half = DotRowsAvx512<uint16_t>;
    k.any_at_least = AnyAtLeastAvx512;
    k.any_at_least_each = AnyAtLeastEachAvx512;
    k.name = "avx512";
  }
#endif
  return k;
}

const Kernels kKernels = Choose();

}  // namespace

float InnerProduct(const float* a, const float* b, size_t d) { return kKernels.dot(a, b, d); }
float InnerProductHalf(const float* a, const uint16_t* b, size_t d) {
  return kKernels.dot_half(a, b, d);
}
float InnerProductHalfHalf(const uint16_t* a, const uint16_t* b, size_t d) {
  return kKernels.dot_half_half(a, b, d);
}
void InnerProductHalf4(const float* a, const uint16_t* const b[4], size_t d, float out[4]) {
  kKernels.dot_half4(a, b, d, out);
}
void FloatToHalf(const float* in, uint16_t* out, size_t d) { kKernels.to_half(in, out, d); }
void HalfToFloat(const uint16_t* in, float* out, size_t d) { kKernels.to_float(in, out, d); }

void DotRows(const float* rows, size_t n, size_t d, const float* q, float* out) {
  kKernels.dot_rows(rows, n, d, q, out);
}
void DotRowsHalf(const uint16_t* rows, size_t n, size_t d, const float* q, float* out) {
  kKernels.dot_rows_half(rows, n, d, q, out);
}

bool AnyAtLeast(const float* s, size_t n, float bound) {
  return kKernels.any_at_least(s, n, bound);
}
bool AnyAtLeastEach(const float* s, const float* bounds, size_t n) {
  return kKernels.any_at_least_each(s, bounds, n);
}

const char* InnerProductKernel() { return kKernels.name; }

}  // namespace nearlabel
