// Patch-aware classification by leave-one-group-out (see anomaly.h).
#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "nearlabel/anomaly.h"

namespace nearlabel {

std::vector<float> PoolPatches(const PatchProjector& projector, const float* raw, int pool,
                               size_t* patches_per_row) {
  const int grid = projector.grid(), dims = projector.dims();
  std::vector<float> projected(projector.patches() * static_cast<size_t>(dims));
  projector.Apply(raw, projected.data());
  pool = std::max(1, pool);
  const int out_grid = (grid + pool - 1) / pool;
  std::vector<float> out(static_cast<size_t>(out_grid) * out_grid * dims, 0.f);
  std::vector<int> count(static_cast<size_t>(out_grid) * out_grid, 0);
  for (int y = 0; y < grid; ++y) {
    for (int x = 0; x < grid; ++x) {
      const size_t o = static_cast<size_t>(y / pool) * out_grid + x / pool;
      const float* s = projected.data() + (static_cast<size_t>(y) * grid + x) * dims;
      for (int d = 0; d < dims; ++d) out[o * dims + d] += s[d];
      ++count[o];
    }
  }
  for (size_t o = 0; o < count.size(); ++o) {
    for (int d = 0; d < dims; ++d) out[o * dims + d] /= static_cast<float>(count[o]);
  }
  *patches_per_row = count.size();
  return out;
}

Result<PatchEvalResult> PatchLeaveOneGroupOut(const PatchEvalInput& in,
                                              const PatchEvalOptions& options) {
  const size_t rows = in.labels.size(), per = in.patches_per_row;
  const int dims = in.dims;
  if (in.groups.size() != rows || in.patches.size() != rows || per == 0 || dims <= 0) {
    return Status::InvalidArgument("patch evaluation input sizes disagree");
  }
  if (options.votes < 1) return Status::InvalidArgument("--patch-votes must be >= 1");
  // Group keys: one per distinct value; rows without one are their own group.
  std::map<std::string, int32_t> keys;
  std::vector<int32_t> group(rows);
  for (size_t i = 0; i < rows; ++i) {
    group[i] = in.groups[i].empty()
                   ? static_cast<int32_t>(i) + (1 << 24)
                   : keys.emplace(in.groups[i], static_cast<int32_t>(keys.size())).first->second;
  }
  auto usable = [&](size_t i) {
    return !in.labels[i].empty() && in.patches[i].size() == per * dims;
  };

  // The normal bank: a coreset of every normal row's patches, each tagged with its row's group.
  std::vector<float> all;
  std::vector<size_t> all_row;
  for (size_t i = 0; i < rows; ++i) {
    if (!usable(i) || in.labels[i] != options.normal_label) continue;
    all.insert(all.end(), in.patches[i].begin(), in.patches[i].end());
    all_row.insert(all_row.end(), per, i);
  }
  if (all_row.empty()) {
    return Status::InvalidArgument("no readable row is labelled '" + options.normal_label +
                                   "' (the normal class)");
  }
  const size_t keep =
      std::max<size_t>(1, static_cast<size_t>(std::ceil(options.coreset_fraction *
                                                        static_cast<double>(all_row.size()))));
  std::vector<float> normal;
  std::vector<int32_t> normal_group;
  std::vector<size_t> normal_row;
  for (size_t c : GreedyCoreset(all.data(), all_row.size(), dims, keep, 1)) {
    normal.insert(normal.end(), all.begin() + static_cast<ptrdiff_t>(c * dims),
                  all.begin() + static_cast<ptrdiff_t>((c + 1) * dims));
    normal_row.push_back(all_row[c]);
    normal_group.push_back(group[all_row[c]]);
  }
  all.clear();
  all.shrink_to_fit();

  // Every row's patch anomalies against the normal patches outside its group; its `votes`
  // most anomalous patches.
  const size_t m = std::min(per, static_cast<size_t>(options.votes));
  std::vector<std::vector<uint32_t>> top(rows);
  std::vector<std::vector<float>> top_anomaly(rows);
  std::vector<std::vector<uint32_t>> top_normal(rows);  // nearest normal bank row of each
  for (size_t i = 0; i < rows; ++i) {
    if (!usable(i)) continue;
    std::vector<float> d;
    std::vector<uint32_t> nearest;
    NearestPatches(normal.data(), normal_row.size(), in.patches[i].data(), per, dims, &d, &nearest,
                   normal_group.data(), group[i]);
    std::vector<uint32_t> order(per);
    std::iota(order.begin(), order.end(), 0u);
    std::partial_sort(
        order.begin(), order.begin() + static_cast<ptrdiff_t>(m), order.end(),
        [&](uint32_t a, uint32_t b) { return d[a] > d[b] || (d[a] == d[b] && a < b); });
    order.resize(m);
    top[i] = order;
    for (uint32_t p : order) {
      top_anomaly[i].push_back(d[p]);
      top_normal[i].push_back(nearest[p]);
    }
  }
  // Defect evidence: the most anomalous patches of every defect row.
  std::vector<float> defect;
  std::vector<int32_t> defect_group;
  std::vector<size_t> defect_row;
  for (size_t i = 0; i < rows; ++i) {
    if (!usable(i) || in.labels[i] == options.normal_label) continue;
    for (uint32_t p : top[i]) {
      defect.insert(defect.end(), in.patches[i].begin() + static_cast<ptrdiff_t>(p * dims),
                    in.patches[i].begin() + static_cast<ptrdiff_t>((p + 1) * dims));
      defect_row.push_back(i);
      defect_group.push_back(group[i]);
    }
  }
  PatchEvalResult r;
  r.predicted.assign(rows, "");
  r.evidence_row.assign(rows, 0);
  r.evidence_distance.assign(rows, 0.f);
  for (size_t i = 0; i < rows; ++i) {
    if (!usable(i)) continue;
    std::vector<float> q;
    for (uint32_t p : top[i]) {
      q.insert(q.end(), in.patches[i].begin() + static_cast<ptrdiff_t>(p * dims),
               in.patches[i].begin() + static_cast<ptrdiff_t>((p + 1) * dims));
    }
    std::vector<float> dd;
    std::vector<uint32_t> di;
    NearestPatches(defect.data(), defect_row.size(), q.data(), top[i].size(), dims, &dd, &di,
                   defect_group.data(), group[i]);
    // Each of the most anomalous patches votes: the class of its nearest defect patch when
    // that is nearer than its nearest normal patch, else the normal class. Majority wins; a
    // tie goes to the class of the most anomalous patch among the tied.
    auto vote_of = [&](size_t v) -> const std::string& {
      const bool defect_nearer = di[v] < defect_row.size() && dd[v] < top_anomaly[i][v];
      return defect_nearer ? in.labels[defect_row[di[v]]] : options.normal_label;
    };
    std::map<std::string, int> votes;
    int most = 0;
    for (size_t v = 0; v < top[i].size(); ++v) most = std::max(most, ++votes[vote_of(v)]);
    std::string best_label = options.normal_label;
    size_t best_row = 0;
    float best_d = 0;
    for (size_t v = 0; v < top[i].size(); ++v) {
      if (votes[vote_of(v)] != most) continue;
      best_label = vote_of(v);
      const bool normal = best_label == options.normal_label;
      best_row = normal ? normal_row[top_normal[i][v]] : defect_row[di[v]];
      best_d = normal ? top_anomaly[i][v] : dd[v];
      break;
    }
    r.predicted[i] = best_label;
    r.evidence_row[i] = best_row;
    r.evidence_distance[i] = best_d;
  }
  return r;
}

}  // namespace nearlabel
