// The HTML evaluation report (`nearlabel eval --report FILE`): one self-contained file (styles,
// charts as inline SVG, thumbnails as data: URIs), readable offline and attachable to a ticket.
#pragma once

#include <functional>
#include <string>
#include <unordered_map>

#include "nearlabel/audit.h"
#include "nearlabel/classify.h"
#include "nearlabel/store.h"

namespace nearlabel {

struct EvalReportPage {
  std::string store;
  std::string model;
  std::string protocol;  // e.g. "leave-one-group-out by tile_group, neighbours within part"
  const EvalReport* report = nullptr;
  // The same evaluation without --group-by, for the "plain vs group-aware" comparison; null
  // when the evaluation is plain already.
  const EvalReport* plain = nullptr;
  const VectorTable* table = nullptr;  // the rows evaluated (report rows index it)
  // JPEG thumbnail of a row id, "" when there is none.
  std::function<std::string(int64_t)> thumbnail;
};

// EvalReportPage::thumbnail for `table` (the page's rows): a stored row's thumbnail from the
// store, or made from its file when it has none (rows stored before thumbnails were kept);
// a held-out query's (ids < 0, at row -id - 1: query_eval.h) made from its file. "" when
// neither can be had. One thread at a time.
class ReportThumbnails {
 public:
  ReportThumbnails(Store& store, const VectorTable& table) : store_(store), table_(table) {}
  std::string operator()(int64_t id);

 private:
  Store& store_;
  const VectorTable& table_;
  std::unordered_map<int64_t, size_t> row_;  // id -> row, built on the first file fallback
};

// Renders the page. The confusion matrix cells carry data-count attributes (the browser test
// checks that they sum to N).
std::string RenderEvalReport(const EvalReportPage& page);

// The anomaly evaluation report (`nearlabel anomaly eval --report FILE`), as self-contained as
// the one above: summary, threshold table, score histogram, and heat maps of the missed
// anomalies, the false alarms and the clearest catches at the calibrated threshold.
struct AnomalyReportImage {
  int64_t id = 0;
  std::string source;
  float score = 0;
  std::string heatmap_jpeg;  // "" when the image could not be drawn
};

struct AnomalyReportPage {
  std::string store;
  std::string name, model, normal, anomalous;
  double auroc = 0.5;
  float threshold = 0;
  double false_alarm_rate = 0;
  std::vector<float> normal_scores, anomalous_scores;
  struct Threshold {
    std::string what;
    float threshold = 0;
    double false_alarm_rate = 0, miss_rate = 0;
  };
  std::vector<Threshold> thresholds;
  // Each list is capped; *_total counts them all.
  std::vector<AnomalyReportImage> missed, false_alarms, caught;
  size_t missed_total = 0, false_alarms_total = 0, caught_total = 0;
};

std::string RenderAnomalyReport(const AnomalyReportPage& page);

// The audit report (`nearlabel audit --report FILE`): summary, then every label issue,
// near-duplicate group, outlier and leaked query with its thumbnails (ids < 0 are queries, at
// row -id - 1 of `queries`). Each finding is a .finding element with data-kind (label, dup,
// outlier, leak) for the browser test.
struct AuditReportPage {
  std::string store;
  const AuditReport* report = nullptr;
  const VectorTable* table = nullptr;      // the audited rows (report rows index it)
  const LeakageReport* leakage = nullptr;  // null without --queries
  const VectorTable* queries = nullptr;
  std::function<std::string(int64_t)> thumbnail;  // JPEG of a row or query id, "" if none
};

std::string RenderAuditReport(const AuditReportPage& page);

}  // namespace nearlabel
