// Classification by neighbour votes, and leave-one-out / leave-one-group-out evaluation.
#pragma once

#include <map>
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

// Calibrated confidence. A k-NN vote's share (3 of 5 neighbours: 0.6) is not a probability.
// Temperature scaling (Guo et al. 2017) of the vote, with the log shares as logits, and a
// floor for the classes no neighbour voted for:
//   P(c) = (1 - floor) x share(c)^(1/temperature) / sum_j share(j)^(1/temperature)
//          + floor / classes
// with temperature and floor fitted by leave-one-out on the store (maximum likelihood of
// each row's own label from its k nearest other rows' vote; a grid search). The transform
// keeps the vote's order, so the label stays the vote's and its confidence is P(label).
struct Calibration {
  int k = 0;  // the neighbours and the vote it was fitted for
  Vote vote = Vote::kMajority;
  double temperature = 0;  // 0: not fitted (confidence is the vote's share)
  double floor = 0;        // within [0, 1)
  size_t classes = 0;      // labels in the store
  size_t fitted_rows = 0;  // rows its leave-one-out used
  bool fitted() const { return temperature > 0; }
  // P(label) from a vote's per-class shares (Prediction::scores).
  double Probability(const Prediction& vote, const std::string& label) const;
};

// Fits a Calibration for `vote`s of k neighbours on the rows of `table` with `label_field`
// (at most `max_rows` of them, spread evenly, ask; every labelled row answers).
// InvalidArgument with fewer than 2 labelled rows or 2 classes. Thread-safe.
Result<Calibration> FitCalibration(const VectorTable& table, const std::string& label_field, int k,
                                   Vote vote, size_t max_rows = 5000);

// FitCalibration of the rows of `store` matching `where`, cached in the store's settings
// as CachedRejection caches (key: label field, where, k, vote; refitted when
// LabelledRowsSignature changes). *how (optional) says which happened.
Result<Calibration> CachedCalibration(Store& store, const std::string& location,
                                      const std::string& where, const std::string& label_field,
                                      int k, Vote vote, std::string* how = nullptr);

// Expected calibration error and the reliability diagram of confidences against outcomes:
// `bins` equal-width confidence bins; ECE = sum over bins of (rows in bin / rows) x
// |accuracy - mean confidence| (Guo et al. 2017).
struct ReliabilityBin {
  double lo = 0, hi = 0;
  size_t n = 0;
  double confidence = 0, accuracy = 0;  // means over the bin's rows
};
struct Reliability {
  double ece = 0;
  std::vector<ReliabilityBin> bins;
};
Reliability MeasureReliability(const std::vector<double>& confidence,
                               const std::vector<bool>& correct, int bins = 10);

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
  // LeaveOneOut: the confidence classify would give each evaluated row, as the vote's share
  // and calibrated (each half of the rows with the Calibration fitted on the other half, so
  // that no row calibrates its own confidence), and their reliability.
  std::vector<double> vote_confidence, calibrated_confidence;
  std::vector<bool> confidence_correct;
  Reliability vote_reliability, calibrated_reliability;
  Calibration calibration;  // fitted on all the evaluated rows (what classify would use)
};

// A report from per-row truths and predictions, for evaluations that do not vote among
// whole-image neighbours (patch-aware). Rows with an empty truth or prediction are skipped;
// `evidence[row]` is shown beside a mismatch.
EvalReport ReportFromPredictions(const EvalOptions& options, const std::vector<std::string>& truth,
                                 const std::vector<std::string>& predicted,
                                 const std::vector<Neighbor>& evidence);

// Evaluates `table` against itself: every row labelled by its k nearest other rows under the
// within/group rules. Rows without a label neither query nor vote.
Result<EvalReport> LeaveOneOut(const VectorTable& table, const EvalOptions& options);

// Open-set rejection: a query is "unknown" when its nearest labelled neighbour is farther than
// the threshold of the class that neighbour would give it. Thresholds come from leave-one-out
// over the labelled rows: per class, the `quantile` of the nearest-neighbour distances of
// rows whose nearest other row has their label. One global threshold is not enough: classes
// differ in spread (on neu-surface-defects a global one caught 44-93% of a held-out class,
// per-class ones 29-100% at 5-9% false rejections; see README, "Small defects").
struct RejectThresholds {
  double quantile = 0.95;
  float global = 0;  // over all classes: for a class with fewer than kMinRows correct matches
  std::map<std::string, float> per_class;
  static constexpr size_t kMinRows = 5;
  // The threshold for a query whose nearest neighbour is labelled `label`.
  float For(const std::string& label) const;
};

// Calibrates thresholds on the rows of `table` that have `label_field`. InvalidArgument when
// fewer than 2 such rows or quantile is outside (0, 1]. Thread-safe.
Result<RejectThresholds> CalibrateRejection(const VectorTable& table,
                                            const std::string& label_field, double quantile);

// The rejection thresholds of the rows of `store` matching `where` ("" = all), cached: they are
// kept in the store's settings under a key of (label field, quantile, where) with a signature
// of the rows (per label: count and two sums of the ids, one GROUP BY query), and reused while
// the signature is unchanged, so that an insert, a delete or a relabelled row recalibrates and
// nothing else does. A miss calibrates (LoadVectors + CalibrateRejection) and saves through a
// read-write handle of `location`; when that cannot be opened (read-only file, replica) the
// thresholds are still returned, uncached. *how (optional) says which happened, for `-v`.
// Same thread-safety as `store`.
Result<RejectThresholds> CachedRejection(Store& store, const std::string& location,
                                         const std::string& where, const std::string& label_field,
                                         double quantile, std::string* how = nullptr);

// The signature of the rows of `store` matching `where` with their `label_field` values (and
// the store's centre): a cache keyed by it is stale exactly when rows were added, deleted or
// relabelled, or the vectors were centred again. Same thread-safety as `store`.
Result<std::string> LabelledRowsSignature(Store& store, const std::string& where,
                                          const std::string& label_field);

struct OpenSetReport {
  std::string unknown_class;
  RejectThresholds thresholds;
  size_t reference_rows = 0;    // known rows that calibrate and answer
  size_t unknown_rows = 0;      // rows of the held-out class
  size_t unknown_rejected = 0;  // ... that came back "unknown"
  size_t known_rows = 0;        // held-out rows of the known classes
  size_t known_rejected = 0;    // ... wrongly called "unknown"
  size_t known_correct = 0;     // ... accepted with the right label
};

// Holds the class `unknown_class` out entirely; splits the other labelled rows at random
// (seed) into a reference half and a held-out half; calibrates on the reference half; then
// labels the held-out known rows and every row of the unknown class by their nearest
// reference row, with rejection. Thread-safe.
Result<OpenSetReport> EvaluateOpenSet(const VectorTable& table, const std::string& label_field,
                                      const std::string& unknown_class, double quantile,
                                      uint32_t seed = 1);

}  // namespace nearlabel
