// Inner products with the widest vector unit the CPU has (AVX-512 when present, chosen at run
// time; NEARLABEL_SIMD_KERNEL=generic forces the portable code), so one binary runs anywhere. Why
// by hand: Debian's FAISS and hnswlib binaries use 128-bit SSE only; bench/search measures what the
// wider unit buys in the HNSW walk.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nearlabel {

// Dot product of two float arrays of length d. Thread-safe.
float InnerProduct(const float* a, const float* b, size_t d);

// IEEE half-precision copies of unit vectors (the HNSW graph's vector copy): half the bytes
// to read per distance, which is what a graph walk over a large index waits for; the error of
// a dot product of unit vectors is ~1e-5. Thread-safe.
void FloatToHalf(const float* in, uint16_t* out, size_t d);
void HalfToFloat(const uint16_t* in, float* out, size_t d);
// Dot product of a float array and a half array, and of two half arrays, of length d.
float InnerProductHalf(const float* a, const uint16_t* b, size_t d);
float InnerProductHalfHalf(const uint16_t* a, const uint16_t* b, size_t d);
// out[j] = InnerProductHalf(a, b[j], d) for j < 4: four rows read side by side, so that four
// memory streams are in flight at once (a graph walk's rows are scattered, and one stream at a
// time waits on memory latency).
void InnerProductHalf4(const float* a, const uint16_t* const b[4], size_t d, float out[4]);

// out[i] = dot(rows[i], q) for i < n (rows row-major n x d, float32 or IEEE half): four rows
// per step against one load of the query, with the next four rows prefetched, so that a scan of a
// table larger than the caches runs at the memory's read rate (bench/search compares it with
// the bandwidth it measures). Thread-safe for disjoint outputs.
void DotRows(const float* rows, size_t n, size_t d, const float* q, float* out);
void DotRowsHalf(const uint16_t* rows, size_t n, size_t d, const float* q, float* out);

// Whether any s[j] >= bound (AnyAtLeast) or s[j] >= bounds[j] (AnyAtLeastEach) for j < n: the
// scans check a chunk of similarities this way and look at single values only in the rare
// chunk that holds a candidate. NaN compares false. Thread-safe.
bool AnyAtLeast(const float* s, size_t n, float bound);
bool AnyAtLeastEach(const float* s, const float* bounds, size_t n);

// Name of the kernel InnerProduct uses ("avx512" or "generic"), for benchmark reports.
const char* InnerProductKernel();

}  // namespace nearlabel
