// The C++ hnswlib baseline of bench/search: Debian's libhnswlib-dev headers compiled in
// bench/hnswlib_native.cc with -O3 -march=native (AVX-512 distances where the CPU has them),
// not the SSE-only python3-hnswlib build.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace nearlabel::bench {

class NativeHnsw {
 public:
  virtual ~NativeHnsw() = default;
  // The k nearest ids (row numbers) of one query at search width ef, nearest first.
  virtual void Search(const float* query, int k, int ef, int64_t* ids) const = 0;
};

// Builds an inner-product index of n rows x d (m, ef_construction as hnswlib's) on `threads`
// threads, the rows' numbers as labels.
std::unique_ptr<NativeHnsw> BuildNativeHnsw(const float* rows, size_t n, int d, int m,
                                            int ef_construction, int threads);

// Whether hnswlib was compiled with its AVX-512 distance (USE_AVX512), for the report.
bool NativeHnswUsesAvx512();

}  // namespace nearlabel::bench
