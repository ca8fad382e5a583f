#include <cblas.h>

#include <algorithm>
#include <limits>
#include <map>
#include <queue>

#include "nearlabel/search.h"

namespace nearlabel {
namespace {

// Keeps the k smallest (distance, row) pairs seen.
class TopK {
 public:
  explicit TopK(int k) : k_(static_cast<size_t>(std::max(k, 0))) {}
  void Push(float distance, size_t row) {
    if (k_ == 0) return;
    if (heap_.size() < k_) {
      heap_.push({distance, row});
    } else if (Less({distance, row}, heap_.top())) {
      heap_.pop();
      heap_.push({distance, row});
    }
  }
  // Worst distance kept, or +inf until k are kept: a cheap pre-check before Push.
  float Bound() const {
    return heap_.size() < k_ ? std::numeric_limits<float>::infinity() : heap_.top().first;
  }
  std::vector<Neighbor> Take() {
    std::vector<Neighbor> out(heap_.size());
    for (size_t i = out.size(); i-- > 0;) {
      out[i] = {heap_.top().second, heap_.top().first};
      heap_.pop();
    }
    return out;
  }

 private:
  using Entry = std::pair<float, size_t>;
  static bool Less(const Entry& a, const Entry& b) {
    return a.first < b.first || (a.first == b.first && a.second < b.second);
  }
  struct Cmp {
    bool operator()(const Entry& a, const Entry& b) const { return Less(a, b); }
  };
  size_t k_;
  std::priority_queue<Entry, std::vector<Entry>, Cmp> heap_;  // max-heap: worst on top
};

}  // namespace

std::vector<Neighbor> ExactSearch(const VectorTable& table, const float* query,
                                  const SearchParams& params) {
  const size_t n = table.size();
  if (n == 0 || params.k <= 0) return {};
  std::vector<float> sims(n);
  cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(n), table.dims, 1.0f,
              table.vectors.data(), table.dims, query, 1, 0.0f, sims.data(), 1);
  TopK top(params.k);
  const bool filtered = !params.allowed.empty();
  for (size_t i = 0; i < n; ++i) {
    if (filtered && !params.allowed[i]) continue;
    const float d = 1.0f - sims[i];
    if (d <= top.Bound()) top.Push(d, i);
  }
  return top.Take();
}

std::vector<std::vector<Neighbor>> LeaveOneOutNeighbors(const VectorTable& table, int k,
                                                        const std::vector<int>& partition,
                                                        const std::vector<int>& group) {
  const size_t n = table.size();
  const int d = table.dims;
  std::vector<std::vector<Neighbor>> result(n);
  // Rows of each partition, in row order.
  std::map<int, std::vector<size_t>> parts;
  for (size_t i = 0; i < n; ++i) parts[partition.empty() ? 0 : partition[i]].push_back(i);

  std::vector<float> block, sims;
  for (const auto& [key, rows] : parts) {
    const size_t m = rows.size();
    // Gather the partition contiguously (a no-op copy when there is one partition).
    block.resize(m * static_cast<size_t>(d));
    for (size_t r = 0; r < m; ++r) {
      std::copy(table.row(rows[r]), table.row(rows[r]) + d, block.data() + r * d);
    }
    // Query tile height: keep the tile x m similarity block near 64 MB.
    const size_t tile = std::clamp<size_t>((16u << 20) / std::max<size_t>(m, 1), 16, 1024);
    sims.resize(std::min(tile, m) * m);
    for (size_t q0 = 0; q0 < m; q0 += tile) {
      const size_t tq = std::min(tile, m - q0);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(tq),
                  static_cast<int>(m), d, 1.0f, block.data() + q0 * d, d, block.data(), d, 0.0f,
                  sims.data(), static_cast<int>(m));
      for (size_t qi = 0; qi < tq; ++qi) {
        const size_t self = q0 + qi;
        const int g = group.empty() ? -1 : group[rows[self]];
        const float* s = sims.data() + qi * m;
        TopK top(k);
        for (size_t j = 0; j < m; ++j) {
          if (j == self) continue;
          if (g >= 0 && group[rows[j]] == g) continue;
          const float dist = 1.0f - s[j];
          if (dist <= top.Bound()) top.Push(dist, rows[j]);
        }
        result[rows[self]] = top.Take();
      }
    }
  }
  return result;
}

}  // namespace nearlabel
