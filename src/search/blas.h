// OpenBLAS set-up shared by every BLAS caller (exact search, PatchCore).
#pragma once

namespace nearlabel {

// Makes OpenBLAS use its AVX-512 (SkylakeX) kernels on AVX-512 CPUs that Debian 12's OpenBLAS
// 0.3.21 does not know and serves with older ones: it takes Zen 4/5 for Haswell and a virtual
// Emerald Rapids Xeon for Prescott (SSE3), whose sgemm ran at a quarter of SkylakeX's there
// (bench/search prints the core in use). Leaves a known core, and any OPENBLAS_CORETYPE the
// user set, as they are; does nothing with an OpenBLAS built for one core. Call before BLAS
// work; the first call does it, later calls return at once. Thread-safe.
void UseFastestBlasKernels();

}  // namespace nearlabel
