// <immintrin.h> for the files that use AVX-512 / AMX intrinsics (simd.cc, bf16_gemm.cc).
// GCC 12's own avx512fintrin.h trips -W(maybe-)uninitialized wherever _mm512_reduce_add_ps,
// the half/bf16 conversions, casts and extracts are inlined: a known false positive of its
// _mm512_undefined_* helpers, nothing of ours is uninitialised. The warnings fire at the
// inlined call sites, so they stay off for the rest of the including file (include this last,
// from .cc files only).
#pragma once

#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
