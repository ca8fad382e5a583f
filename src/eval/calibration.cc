// Calibrated confidence: a softmax temperature and a floor fitted by leave-one-out, and the
// reliability (ECE) of confidences.
#include <algorithm>
#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

#include "common/json.h"
#include "common/sha256.h"
#include "eval/calibration_fit.h"
#include "eval/fit_cache.h"
#include "eval/labelled_rows.h"
#include "nearlabel/classify.h"
#include "nearlabel/dataset.h"

namespace nearlabel {
namespace {

// The grids searched: temperatures that sharpen the vote (< 1) or flatten it (> 1), and
// floors up to half the probability.
std::vector<double> TemperatureGrid() {
  std::vector<double> t;
  for (double v = 0.1; v < 20; v *= 1.1) t.push_back(v);
  return t;
}
const double kFloors[] = {0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5};

// share(label)^(1/t) / sum_j share(j)^(1/t) over a vote's scores (0 when it has no label).
double Sharpened(const Prediction& vote, const std::string& label, double t) {
  double own = 0, sum = 0;
  for (const auto& [l, s] : vote.scores) {
    const double v = s > 0 ? std::pow(s, 1 / t) : 0;
    sum += v;
    if (l == label) own = v;
  }
  return sum > 0 ? own / sum : 0;
}

}  // namespace

double Calibration::Probability(const Prediction& vote, const std::string& label) const {
  return (1 - floor) * Sharpened(vote, label, temperature) +
         floor / static_cast<double>(std::max<size_t>(1, classes));
}

Calibration FitCalibrationFromVotes(const std::vector<Prediction>& votes,
                                    const std::vector<std::string>& labels,
                                    const std::vector<size_t>& rows, size_t classes, int k,
                                    Vote vote) {
  Calibration best;
  best.k = k;
  best.vote = vote;
  best.classes = classes;
  double best_nll = std::numeric_limits<double>::infinity();
  std::vector<double> own;
  for (double t : TemperatureGrid()) {
    own.clear();
    for (size_t i : rows) {
      if (!votes[i].scores.empty()) own.push_back(Sharpened(votes[i], labels[i], t));
    }
    if (own.empty()) return best;
    for (double floor : kFloors) {
      double nll = 0;
      for (double s : own) {
        const double pr = (1 - floor) * s + floor / static_cast<double>(classes);
        nll -= pr > 0 ? std::log(pr) : -1e6;
      }
      if (nll < best_nll) {
        best_nll = nll;
        best.temperature = t;
        best.floor = floor;
        best.fitted_rows = own.size();
      }
    }
  }
  return best;
}

Result<Calibration> FitCalibration(const VectorTable& table, const std::string& label_field, int k,
                                   Vote vote, size_t max_rows) {
  if (k < 1) return Status::InvalidArgument("k must be >= 1");
  LabelledRows selected = SelectLabelled(table, label_field);
  const VectorTable& t = selected.table;
  const std::vector<std::string>& labels = selected.labels;
  std::vector<std::string> classes = labels;
  std::sort(classes.begin(), classes.end());
  classes.erase(std::unique(classes.begin(), classes.end()), classes.end());
  if (t.size() < 2 || classes.size() < 2) {
    return Status::InvalidArgument("calibration needs at least 2 rows of 2 classes labelled '" +
                                   label_field + "'");
  }
  // Evenly spread query rows; each finds its k nearest other rows among all of them.
  std::vector<size_t> rows;
  const size_t n = std::min(t.size(), std::max<size_t>(1, max_rows));
  for (size_t q = 0; q < n; ++q) rows.push_back(q * t.size() / n);
  std::vector<float> queries;
  for (size_t r : rows) queries.insert(queries.end(), t.row(r), t.row(r) + t.dims);
  SearchParams params;
  params.k = k + 1;
  const auto found = ExactSearchBatch(t, queries.data(), rows.size(), params);
  std::vector<Prediction> votes(t.size());
  for (size_t q = 0; q < rows.size(); ++q) {
    std::vector<Neighbor> others;
    for (const Neighbor& nb : found[q]) {
      if (nb.row != rows[q] && others.size() < static_cast<size_t>(k)) others.push_back(nb);
    }
    votes[rows[q]] = VoteLabel(others, labels, vote);
  }
  return FitCalibrationFromVotes(votes, labels, rows, classes.size(), k, vote);
}

Result<Calibration> CachedCalibration(Store& store, const std::string& location,
                                      const std::string& where, const std::string& label_field,
                                      int k, Vote vote, std::string* how) {
  NL_ASSIGN_OR_RETURN(const std::string want, LabelledRowsSignature(store, where, label_field));
  const std::string key =
      "calibration-cache/" +
      Sha256Hex(label_field + '\0' + where + '\0' + std::to_string(k) + '\0' + VoteName(vote));
  NL_ASSIGN_OR_RETURN(auto cached, ReadFitCache(store, key, want));
  if (cached) {
    try {
      Calibration c;
      c.k = k;
      c.vote = vote;
      c.temperature = cached->at("temperature").get<double>();
      c.floor = cached->at("floor").get<double>();
      c.classes = cached->at("classes").get<size_t>();
      c.fitted_rows = cached->at("rows").get<size_t>();
      if (c.temperature > 0 && c.floor >= 0 && c.floor < 1 && c.classes >= 2) {
        if (how) *how = kFromFitCache;
        return c;
      }
    } catch (const nlohmann::json::exception&) {
      // A damaged entry: fit again and overwrite it.
    }
  }
  NL_ASSIGN_OR_RETURN(VectorTable rows, store.LoadVectors(where));
  NL_ASSIGN_OR_RETURN(Calibration c, FitCalibration(rows, label_field, k, vote));
  const std::string saved = WriteFitCache(location, key, want,
                                          {{"temperature", c.temperature},
                                           {"floor", c.floor},
                                           {"classes", c.classes},
                                           {"rows", c.fitted_rows}},
                                          "fitted");
  if (how) *how = saved;
  return c;
}

Reliability MeasureReliability(const std::vector<double>& confidence,
                               const std::vector<bool>& correct, int bins) {
  Reliability r;
  bins = std::max(1, bins);
  r.bins.resize(static_cast<size_t>(bins));
  for (int b = 0; b < bins; ++b) {
    r.bins[b].lo = static_cast<double>(b) / bins;
    r.bins[b].hi = static_cast<double>(b + 1) / bins;
  }
  for (size_t i = 0; i < confidence.size(); ++i) {
    const int b = std::clamp(static_cast<int>(confidence[i] * bins), 0, bins - 1);
    ReliabilityBin& bin = r.bins[static_cast<size_t>(b)];
    ++bin.n;
    bin.confidence += confidence[i];
    bin.accuracy += correct[i] ? 1 : 0;
  }
  for (ReliabilityBin& bin : r.bins) {
    if (bin.n == 0) continue;
    bin.confidence /= static_cast<double>(bin.n);
    bin.accuracy /= static_cast<double>(bin.n);
    r.ece += static_cast<double>(bin.n) / static_cast<double>(confidence.size()) *
             std::fabs(bin.accuracy - bin.confidence);
  }
  return r;
}

}  // namespace nearlabel
