// Inner products with the widest vector unit the CPU has (AVX-512 when present, chosen at run
// time), so one binary runs anywhere. Why by hand: Debian's FAISS and hnswlib binaries use
// 128-bit SSE only; bench/search measures what the wider unit buys in the HNSW walk.
#pragma once

#include <cstddef>

namespace nearlabel {

// Dot product of two float arrays of length d. Thread-safe.
float InnerProduct(const float* a, const float* b, size_t d);

// Name of the kernel InnerProduct uses ("avx512" or "generic"), for benchmark reports.
const char* InnerProductKernel();

}  // namespace nearlabel
