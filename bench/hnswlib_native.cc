// See hnswlib_native.h. hnswlib's templates are compiled here with other flags than in
// nearlabel_core (which includes the same headers): inside a namespace of their own, so the
// linker never merges the two builds' inline functions. The standard headers hnswlib includes
// come first, outside that namespace, so their include guards keep them out of it.
#include <assert.h>
#include <cpuid.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <x86intrin.h>
#include <algorithm>
#include <atomic>
#include <cassert>
#include <deque>
#include <fstream>
#include <iostream>
#include <list>
#include <mutex>
#include <queue>
#include <random>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "hnswlib_native.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
namespace native {
#include <hnswlib/hnswlib.h>
}  // namespace native
#pragma GCC diagnostic pop

namespace nearlabel::bench {
namespace {

class Index : public NativeHnsw {
 public:
  Index(size_t n, int d, int m, int efc) : space_(d), hnsw_(&space_, n, m, efc, 100) {}
  void Build(const float* rows, size_t n, int d, int threads) {
    std::atomic<size_t> next{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&] {
        for (size_t i; (i = next++) < n;) hnsw_.addPoint(rows + i * d, i);
      });
    }
    for (auto& th : pool) th.join();
  }
  void Search(const float* query, int k, int ef, int64_t* ids) const override {
    auto& h = const_cast<native::hnswlib::HierarchicalNSW<float>&>(hnsw_);
    h.setEf(static_cast<size_t>(std::max(ef, k)));
    auto top = h.searchKnn(query, static_cast<size_t>(k));
    for (int i = static_cast<int>(top.size()) - 1; i >= 0; --i) {
      ids[i] = static_cast<int64_t>(top.top().second);
      top.pop();
    }
  }

 private:
  native::hnswlib::InnerProductSpace space_;
  native::hnswlib::HierarchicalNSW<float> hnsw_;
};

}  // namespace

std::unique_ptr<NativeHnsw> BuildNativeHnsw(const float* rows, size_t n, int d, int m,
                                            int ef_construction, int threads) {
  auto index = std::make_unique<Index>(n, d, m, ef_construction);
  index->Build(rows, n, d, threads);
  return index;
}

bool NativeHnswUsesAvx512() {
#if defined(USE_AVX512)
  return native::AVX512Capable();
#else
  return false;
#endif
}

}  // namespace nearlabel::bench
