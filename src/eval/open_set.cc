// Open-set rejection: per-class distance thresholds from leave-one-out, and the held-out-class
// evaluation.
#include <algorithm>
#include <random>

#include <nlohmann/json.hpp>

#include "common/json.h"
#include "common/sha256.h"
#include "eval/fit_cache.h"
#include "eval/labelled_rows.h"
#include "nearlabel/anomaly.h"
#include "nearlabel/classify.h"
#include "nearlabel/dataset.h"
#include "nearlabel/store.h"

namespace nearlabel {

float RejectThresholds::For(const std::string& label) const {
  auto it = per_class.find(label);
  return it == per_class.end() ? global : it->second;
}

Result<RejectThresholds> CalibrateRejection(const VectorTable& table,
                                            const std::string& label_field, double quantile) {
  if (!(quantile > 0 && quantile <= 1)) {
    return Status::InvalidArgument("the rejection quantile must be within (0, 1]");
  }
  const std::vector<std::string> all_labels = RowLabels(table, label_field);
  std::vector<size_t> labelled;
  for (size_t i = 0; i < table.size(); ++i) {
    if (!all_labels[i].empty()) labelled.push_back(i);
  }
  if (labelled.size() < 2) {
    return Status::InvalidArgument("rejection needs at least 2 rows labelled '" + label_field +
                                   "' to calibrate on");
  }
  const VectorTable t = Subset(table, labelled);
  const auto nn = LeaveOneOutNeighbors(t, 1, {}, {});
  std::map<std::string, std::vector<float>> correct;
  std::vector<float> all;
  for (size_t i = 0; i < t.size(); ++i) {
    if (nn[i].empty()) continue;
    const std::string& label = all_labels[labelled[i]];
    if (all_labels[labelled[nn[i][0].row]] != label) continue;
    correct[label].push_back(nn[i][0].distance);
    all.push_back(nn[i][0].distance);
  }
  RejectThresholds r;
  r.quantile = quantile;
  // ThresholdForFalseAlarms(v, 1 - q) is the q-quantile of v.
  r.global = ThresholdForFalseAlarms(all, 1 - quantile);
  for (const auto& [label, d] : correct) {
    if (d.size() >= RejectThresholds::kMinRows) {
      r.per_class[label] = ThresholdForFalseAlarms(d, 1 - quantile);
    }
  }
  return r;
}

Result<std::string> LabelledRowsSignature(Store& store, const std::string& where,
                                          const std::string& label_field) {
  // Rows added, deleted or relabelled change a label's count or sums; the residues keep the
  // second sum below SQLite's 64-bit limit (sum() fails on overflow) up to two billion rows a
  // label. Vectors change in place only when a centred store is centred again, which writes
  // a new centre: it is part of the signature.
  const std::string sql = "SELECT field(metadata, " + SqlStringLiteral(label_field) +
                          ") AS l, count(*), sum(id), sum((id % 65521) * (id % 65519)) FROM "
                          "items" +
                          (where.empty() ? "" : " WHERE (" + where + ")") +
                          " GROUP BY l ORDER BY l";
  NL_ASSIGN_OR_RETURN(std::vector<SqlResult> res, store.Execute(sql));
  std::string signature;
  for (const auto& row : res.at(0).rows) {
    for (const SqlValue& v : row) signature += SqlValueText(v) + "\t";
    signature += "\n";
  }
  NL_ASSIGN_OR_RETURN(std::string centre, store.GetSetting(kCentreSettingKey));
  return Sha256Hex(signature + "centre\t" + centre);
}

Result<RejectThresholds> CachedRejection(Store& store, const std::string& location,
                                         const std::string& where, const std::string& label_field,
                                         double quantile, std::string* how) {
  NL_ASSIGN_OR_RETURN(const std::string want, LabelledRowsSignature(store, where, label_field));
  const std::string key =
      "reject-cache/" + Sha256Hex(label_field + '\0' + where + '\0' + std::to_string(quantile));
  NL_ASSIGN_OR_RETURN(auto cached, ReadFitCache(store, key, want));
  if (cached) {
    try {
      RejectThresholds r;
      r.quantile = cached->at("quantile").get<double>();
      r.global = cached->at("global").get<float>();
      r.per_class = cached->at("per_class").get<std::map<std::string, float>>();
      if (how) *how = kFromFitCache;
      return r;
    } catch (const nlohmann::json::exception&) {
      // A damaged entry: calibrate again and overwrite it.
    }
  }
  NL_ASSIGN_OR_RETURN(VectorTable rows, store.LoadVectors(where));
  NL_ASSIGN_OR_RETURN(RejectThresholds r, CalibrateRejection(rows, label_field, quantile));
  const std::string saved = WriteFitCache(
      location, key, want,
      {{"quantile", r.quantile}, {"global", r.global}, {"per_class", r.per_class}}, "calibrated");
  if (how) *how = saved;
  return r;
}

Result<OpenSetReport> EvaluateOpenSet(const VectorTable& table, const std::string& label_field,
                                      const std::string& unknown_class, double quantile,
                                      uint32_t seed) {
  const std::vector<std::string> labels = RowLabels(table, label_field);
  std::vector<size_t> known, unknown;
  for (size_t i = 0; i < table.size(); ++i) {
    if (labels[i].empty()) continue;
    (labels[i] == unknown_class ? unknown : known).push_back(i);
  }
  if (unknown.empty()) {
    return Status::InvalidArgument("no row is labelled '" + unknown_class + "' in '" + label_field +
                                   "'");
  }
  if (known.size() < 4) {
    return Status::InvalidArgument("open-set evaluation needs at least 4 rows of other classes");
  }
  std::mt19937 rng(seed);
  std::shuffle(known.begin(), known.end(), rng);
  std::vector<size_t> reference(known.begin(),
                                known.begin() + static_cast<ptrdiff_t>(known.size() / 2));
  std::vector<size_t> held(known.begin() + static_cast<ptrdiff_t>(known.size() / 2), known.end());
  std::sort(reference.begin(), reference.end());
  const VectorTable ref = Subset(table, reference);
  OpenSetReport rep;
  rep.unknown_class = unknown_class;
  NL_ASSIGN_OR_RETURN(rep.thresholds, CalibrateRejection(ref, label_field, quantile));
  rep.reference_rows = ref.size();
  auto answer = [&](const std::vector<size_t>& rows, size_t* rejected, size_t* correct) {
    const VectorTable q = Subset(table, rows);
    SearchParams p;
    p.k = 1;
    const auto found = ExactSearchBatch(ref, q.vectors.data(), q.size(), p);
    for (size_t i = 0; i < rows.size(); ++i) {
      if (found[i].empty()) continue;
      const std::string& label = labels[reference[found[i][0].row]];
      if (found[i][0].distance > rep.thresholds.For(label)) {
        ++*rejected;
      } else if (correct && label == labels[rows[i]]) {
        ++*correct;
      }
    }
  };
  rep.unknown_rows = unknown.size();
  answer(unknown, &rep.unknown_rejected, nullptr);
  rep.known_rows = held.size();
  answer(held, &rep.known_rejected, &rep.known_correct);
  return rep;
}

}  // namespace nearlabel
