#include <algorithm>
#include <cmath>
#include <map>

#include "nearlabel/classify.h"

namespace nearlabel {

Result<Vote> ParseVote(const std::string& name) {
  if (name == "majority") return Vote::kMajority;
  if (name == "distance") return Vote::kDistance;
  if (name == "softmax") return Vote::kSoftmax;
  return Status::InvalidArgument("unknown vote '" + name + "' (majority, distance or softmax)");
}

const char* VoteName(Vote vote) {
  switch (vote) {
    case Vote::kMajority:
      return "majority";
    case Vote::kDistance:
      return "distance";
    case Vote::kSoftmax:
      return "softmax";
  }
  return "?";
}

Prediction VoteLabel(const std::vector<Neighbor>& neighbors, const std::vector<std::string>& labels,
                     Vote vote, double temperature) {
  std::map<std::string, double> weight;
  std::map<std::string, size_t> first_rank;  // rank of each class's nearest neighbour
  double total = 0;
  // Softmax weights relative to the nearest similarity, so exp never overflows.
  const double base = neighbors.empty() ? 0 : 1.0 - neighbors.front().distance;
  for (size_t r = 0; r < neighbors.size(); ++r) {
    const std::string& label = labels[neighbors[r].row];
    if (label.empty()) continue;
    double w = 1;
    if (vote == Vote::kDistance) w = 1.0 / (std::max(0.0f, neighbors[r].distance) + 1e-6);
    if (vote == Vote::kSoftmax) w = std::exp(((1.0 - neighbors[r].distance) - base) / temperature);
    weight[label] += w;
    first_rank.emplace(label, r);
    total += w;
  }
  Prediction p;
  for (const auto& [label, w] : weight) p.scores.emplace_back(label, total > 0 ? w / total : 0);
  std::sort(p.scores.begin(), p.scores.end(), [&](const auto& a, const auto& b) {
    if (a.second != b.second) return a.second > b.second;
    return first_rank[a.first] < first_rank[b.first];
  });
  if (!p.scores.empty()) {
    p.label = p.scores.front().first;
    p.confidence = p.scores.front().second;
  }
  return p;
}

}  // namespace nearlabel
