#include "search/simd.h"

// GCC 12's own avx512fintrin.h trips -Wuninitialized in _mm512_reduce_add_ps (a known false
// positive of its _mm512_undefined_ps); nothing of ours is uninitialised.
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

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

#if defined(__x86_64__)
__attribute__((target("avx512f"))) float InnerProductAvx512(const float* a, const float* b,
                                                            size_t d) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= d; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  if (i + 16 <= d) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    i += 16;
  }
  if (i < d) {  // masked tail: no scalar loop, no read past the end
    const __mmask16 m = static_cast<__mmask16>((1u << (d - i)) - 1);
    acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}
#endif

using Kernel = float (*)(const float*, const float*, size_t);

Kernel Choose() {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx512f")) return InnerProductAvx512;
#endif
  return InnerProductGeneric;
}

const Kernel kKernel = Choose();

}  // namespace

float InnerProduct(const float* a, const float* b, size_t d) { return kKernel(a, b, d); }

const char* InnerProductKernel() { return kKernel == InnerProductGeneric ? "generic" : "avx512"; }

}  // namespace nearlabel
