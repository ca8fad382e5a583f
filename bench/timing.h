// Timing shared by the benchmarks.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>

namespace nearlabel::bench {

// The best wall time, in seconds, of `passes` runs of fn: the least disturbed by the rest of
// the machine.
inline double BestSeconds(int passes, const std::function<void()>& fn) {
  double best = 1e30;
  for (int i = 0; i < passes; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace nearlabel::bench
