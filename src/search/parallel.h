// One thread per core over an index range: what the search kernels split their work with.
#pragma once

#include <algorithm>
#include <cstddef>
#include <thread>
#include <vector>

namespace nearlabel {

// Runs fn(begin, end) over [0, n) split into contiguous ranges, one per core but none smaller
// than `min_per_worker` items (fn must be thread-safe for disjoint ranges). A range that would
// be the only one runs inline.
template <typename Fn>
void ParallelFor(size_t n, const Fn& fn, size_t min_per_worker = 64) {
  const size_t workers =
      std::min<size_t>(std::max(1u, std::thread::hardware_concurrency()),
                       std::max<size_t>(1, n / std::max<size_t>(1, min_per_worker)));
  if (workers <= 1) {
    if (n > 0) fn(size_t{0}, n);
    return;
  }
  std::vector<std::thread> pool;
  const size_t per = (n + workers - 1) / workers;
  for (size_t w = 1; w < workers; ++w) {
    const size_t b = std::min(n, w * per), e = std::min(n, (w + 1) * per);
    if (b < e) pool.emplace_back([&fn, b, e] { fn(b, e); });
  }
  fn(size_t{0}, std::min(n, per));
  for (auto& t : pool) t.join();
}

}  // namespace nearlabel
