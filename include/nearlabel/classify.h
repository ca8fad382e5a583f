// Classification by neighbour votes, and leave-one-out / leave-one-group-out evaluation.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "nearlabel/search.h"
#include "nearlabel/store.h"

namespace nearlabel {

enum class Vote {
  kMajority,  // one vote per neighbour; ties go to the class with the nearest neighbour
  kDistance,  // weight 1 / (distance + 1e-6)
  kSoftmax,   // weight exp(similarity / temperature), similarity = 1 - distance
};
Result<Vote> ParseVote(const std::string& name);
const char* VoteName(Vote vote);

struct Prediction {
  std::string label;      // "" when there were no labelled neighbours
  double confidence = 0;  // the winning class's share of the total weight
  std::vector<std::pair<std::string, double>> scores;  // per class, share of weight, best first
};

// Votes among `neighbors` whose labels are labels[neighbor.row]; empty labels do not vote.
Prediction VoteLabel(const std::vector<Neighbor>& neighbors, const std::vector<std::string>& labels,
                     Vote vote, double temperature = 0.07);

struct EvalOptions {
  std::string label_field;   // the field predicted, e.g. "quality" or "label"
  std::string within_field;  // only neighbours with the same value ("" = all rows)
  std::string group_field;   // never a neighbour with the same value ("" = plain LOO)
  int k = 1;
  Vote vote = Vote::kMajority;
  double temperature = 0.07;
};

struct EvalCase {
  size_t row = 0;  // query row
  std::string truth;
  std::string predicted;
  std::vector<Neighbor> neighbors;  // nearest first
};

struct ClassStats {
  std::string label;
  size_t support = 0;  // rows whose truth is this label
  size_t predicted = 0;
  size_t true_positives = 0;
  double precision = 0, recall = 0, f1 = 0;
};

struct EvalReport {
  EvalOptions options;
  size_t rows = 0;  // rows loaded
  size_t n = 0;     // rows evaluated
  size_t correct = 0;
  size_t no_label = 0;      // rows skipped: empty label field
  size_t no_candidate = 0;  // rows skipped: no allowed neighbour (e.g. alone in its part)
  double accuracy = 0;
  std::vector<std::string> classes;            // sorted
  std::vector<std::vector<size_t>> confusion;  // [truth][predicted], indices into classes
  std::vector<ClassStats> per_class;
  std::vector<EvalCase> mismatches;  // in row order
  std::vector<float> nearest_distance_correct, nearest_distance_wrong;
};

// Evaluates `table` against itself: every row labelled by its k nearest other rows under the
// within/group rules. Rows without a label neither query nor vote.
Result<EvalReport> LeaveOneOut(const VectorTable& table, const EvalOptions& options);

}  // namespace nearlabel
