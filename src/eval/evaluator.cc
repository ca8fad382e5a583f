#include <algorithm>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "common/json.h"
#include "eval/calibration_fit.h"
#include "nearlabel/classify.h"
#include "nearlabel/dataset.h"

namespace nearlabel {
namespace {

// Maps string keys to dense ints; "" maps to -1 when `empty_is_none`.
std::vector<int> KeyIds(const std::vector<std::string>& keys, bool empty_is_none) {
  std::map<std::string, int> ids;
  std::vector<int> out(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    if (empty_is_none && keys[i].empty()) {
      out[i] = -1;
      continue;
    }
    out[i] = ids.emplace(keys[i], static_cast<int>(ids.size())).first->second;
  }
  return out;
}

// Sets the report's classes (sorted) and an empty confusion matrix; returns class -> index.
std::map<std::string, size_t> InitClasses(const std::set<std::string>& class_set, EvalReport* rep) {
  rep->classes.assign(class_set.begin(), class_set.end());
  std::map<std::string, size_t> index;
  for (size_t c = 0; c < rep->classes.size(); ++c) index[rep->classes[c]] = c;
  rep->confusion.assign(rep->classes.size(), std::vector<size_t>(rep->classes.size(), 0));
  return index;
}

// Accuracy and per-class precision/recall/F1 from the confusion matrix.
void FillClassStats(EvalReport* rep) {
  rep->accuracy = rep->n ? static_cast<double>(rep->correct) / static_cast<double>(rep->n) : 0;
  for (size_t c = 0; c < rep->classes.size(); ++c) {
    ClassStats s;
    s.label = rep->classes[c];
    for (size_t o = 0; o < rep->classes.size(); ++o) {
      s.support += rep->confusion[c][o];
      s.predicted += rep->confusion[o][c];
    }
    s.true_positives = rep->confusion[c][c];
    s.precision = s.predicted ? static_cast<double>(s.true_positives) / s.predicted : 0;
    s.recall = s.support ? static_cast<double>(s.true_positives) / s.support : 0;
    s.f1 = s.precision + s.recall > 0 ? 2 * s.precision * s.recall / (s.precision + s.recall) : 0;
    rep->per_class.push_back(s);
  }
}

// The confidences of the evaluated rows: the vote's share, and calibrated by 2-fold cross
// fitting (even rows by the fit on odd rows and the other way round); their reliability.
void CalibrateConfidences(const std::vector<Prediction>& predicted,
                          const std::vector<std::string>& labels, const EvalOptions& options,
                          size_t classes, EvalReport* rep) {
  if (classes < 2) return;
  std::vector<size_t> fold[2], all;
  for (size_t i = 0; i < predicted.size(); ++i) {
    if (predicted[i].scores.empty()) continue;
    fold[i % 2].push_back(i);
    all.push_back(i);
  }
  auto fit = [&](const std::vector<size_t>& rows) {
    return FitCalibrationFromVotes(predicted, labels, rows, classes, options.k, options.vote);
  };
  const Calibration half[2] = {fit(fold[1]), fit(fold[0])};
  rep->calibration = fit(all);
  for (size_t i : all) {
    const Calibration& c = half[i % 2].fitted() ? half[i % 2] : rep->calibration;
    rep->vote_confidence.push_back(predicted[i].confidence);
    rep->calibrated_confidence.push_back(
        c.fitted() ? c.Probability(predicted[i], predicted[i].label) : predicted[i].confidence);
    rep->confidence_correct.push_back(predicted[i].label == labels[i]);
  }
  rep->vote_reliability = MeasureReliability(rep->vote_confidence, rep->confidence_correct);
  rep->calibrated_reliability =
      MeasureReliability(rep->calibrated_confidence, rep->confidence_correct);
}

}  // namespace

EvalReport ReportFromPredictions(const EvalOptions& options, const std::vector<std::string>& truth,
                                 const std::vector<std::string>& predicted,
                                 const std::vector<Neighbor>& evidence) {
  EvalReport rep;
  rep.options = options;
  rep.rows = truth.size();
  std::set<std::string> class_set;
  for (size_t i = 0; i < truth.size(); ++i) {
    if (truth[i].empty() || predicted[i].empty()) continue;
    class_set.insert(truth[i]);
    class_set.insert(predicted[i]);
  }
  std::map<std::string, size_t> index = InitClasses(class_set, &rep);
  for (size_t i = 0; i < truth.size(); ++i) {
    if (truth[i].empty()) {
      ++rep.no_label;
      continue;
    }
    if (predicted[i].empty()) {
      ++rep.no_candidate;
      continue;
    }
    ++rep.n;
    const bool ok = truth[i] == predicted[i];
    rep.correct += ok;
    rep.confusion[index[truth[i]]][index[predicted[i]]]++;
    if (!ok) rep.mismatches.push_back({i, truth[i], predicted[i], {evidence[i]}});
  }
  FillClassStats(&rep);
  return rep;
}

Result<EvalReport> LeaveOneOut(const VectorTable& all, const EvalOptions& options) {
  if (options.label_field.empty()) return Status::InvalidArgument("--label is required");
  if (options.k < 1) return Status::InvalidArgument("k must be >= 1");
  EvalReport rep;
  rep.options = options;
  rep.rows = all.size();

  // Only labelled rows take part: copy them into their own table.
  VectorTable t;
  t.dims = all.dims;
  std::vector<std::string> labels, within, groups;
  std::vector<size_t> orig_row;
  for (size_t i = 0; i < all.size(); ++i) {
    nlohmann::json meta = ParseJson(all.metadata[i]);
    std::string label = MetadataField(meta, options.label_field);
    if (label.empty()) {
      ++rep.no_label;
      continue;
    }
    labels.push_back(label);
    within.push_back(options.within_field.empty() ? "" : MetadataField(meta, options.within_field));
    groups.push_back(options.group_field.empty() ? "" : MetadataField(meta, options.group_field));
    orig_row.push_back(i);
    t.ids.push_back(all.ids[i]);
    t.vectors.insert(t.vectors.end(), all.row(i), all.row(i) + all.dims);
  }
  std::vector<int> partition = KeyIds(within, false);
  std::vector<int> group = options.group_field.empty() ? std::vector<int>() : KeyIds(groups, true);
  auto neighbors = LeaveOneOutNeighbors(t, options.k, partition, group);

  std::map<std::string, size_t> class_index =
      InitClasses(std::set<std::string>(labels.begin(), labels.end()), &rep);

  std::vector<Prediction> predicted(t.size());
  for (size_t i = 0; i < t.size(); ++i) {
    if (neighbors[i].empty()) {
      ++rep.no_candidate;
      continue;
    }
    Prediction& p = predicted[i] =
        VoteLabel(neighbors[i], labels, options.vote, options.temperature);
    ++rep.n;
    const bool ok = p.label == labels[i];
    rep.correct += ok;
    rep.confusion[class_index[labels[i]]][class_index[p.label]]++;
    (ok ? rep.nearest_distance_correct : rep.nearest_distance_wrong)
        .push_back(neighbors[i].front().distance);
    if (!ok) {
      EvalCase c;
      c.row = orig_row[i];
      c.truth = labels[i];
      c.predicted = p.label;
      for (Neighbor nb : neighbors[i]) {
        nb.row = orig_row[nb.row];
        c.neighbors.push_back(nb);
      }
      rep.mismatches.push_back(std::move(c));
    }
  }
  FillClassStats(&rep);
  CalibrateConfidences(predicted, labels, options, rep.classes.size(), &rep);
  return rep;
}

}  // namespace nearlabel
