#include "eval/report.h"

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <tuple>

#include <nlohmann/json.hpp>

#include "common/data_uri.h"
#include "common/json.h"
#include "nearlabel/dataset.h"
#include "nearlabel/image.h"

namespace nearlabel {
namespace {

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// "#42" for a store row; "query 3" for the third image of a held-out query set (ids < 0).
std::string RowName(int64_t id) {
  return id < 0 ? "query " + std::to_string(-id) : "#" + std::to_string(id);
}

std::string Thumb(const EvalReportPage& page, size_t row) {
  const int64_t id = page.table->ids[row];
  const std::string uri = page.thumbnail ? DataUri(page.thumbnail(id), "image/jpeg") : "";
  if (uri.empty()) return "<div class=\"nothumb\">no thumbnail</div>";
  return "<img src=\"" + uri + "\" alt=\"row " + std::to_string(id) + "\">";
}

// Two overlaid histograms as an SVG: `correct` in blue, `wrong` in red (their names in the bars'
// tooltips), and a dashed line at `marker` when it is >= 0.
std::string Histogram(const std::vector<float>& correct, const std::vector<float>& wrong,
                      const char* correct_name = " correct", const char* wrong_name = " wrong",
                      const char* what = "distance", float marker = -1) {
  constexpr int kBins = 30, kW = 640, kH = 200, kPad = 30;
  float hi = std::max(1e-6f, marker * 1.05f);
  for (float d : correct) hi = std::max(hi, d);
  for (float d : wrong) hi = std::max(hi, d);
  std::vector<size_t> c(kBins), w(kBins);
  auto bin = [&](float d) { return std::min(kBins - 1, static_cast<int>(d / hi * kBins)); };
  for (float d : correct) ++c[static_cast<size_t>(bin(d))];
  for (float d : wrong) ++w[static_cast<size_t>(bin(d))];
  size_t top = 1;
  for (int i = 0; i < kBins; ++i) top = std::max({top, c[i], w[i]});
  std::ostringstream s;
  s << "<svg class=\"hist\" viewBox=\"0 0 " << kW << " " << kH + kPad
    << "\" role=\"img\" aria-label=\"histogram of " << what << "\">";
  const double bw = static_cast<double>(kW - kPad) / kBins;
  for (int i = 0; i < kBins; ++i) {
    const double x = kPad + i * bw;
    for (int series = 0; series < 2; ++series) {
      const size_t n = series == 0 ? c[i] : w[i];
      const double h = static_cast<double>(kH - 10) * n / top;
      s << "<rect x=\"" << Fixed(x + series * bw / 2, 1) << "\" y=\"" << Fixed(kH - h, 1)
        << "\" width=\"" << Fixed(bw / 2 - 1, 1) << "\" height=\"" << Fixed(h, 1) << "\" class=\""
        << (series == 0 ? "ok" : "bad") << "\"><title>" << n
        << (series == 0 ? correct_name : wrong_name) << ", " << what << " "
        << Fixed(hi * i / kBins, 3) << "–" << Fixed(hi * (i + 1) / kBins, 3) << "</title></rect>";
    }
  }
  s << "<line x1=\"" << kPad << "\" y1=\"" << kH << "\" x2=\"" << kW << "\" y2=\"" << kH
    << "\" stroke=\"#999\"/>";
  for (int t = 0; t <= 4; ++t) {
    s << "<text x=\"" << Fixed(kPad + (kW - kPad) * t / 4.0, 1) << "\" y=\"" << kH + 18
      << "\" text-anchor=\"middle\">" << Fixed(hi * t / 4, 3) << "</text>";
  }
  if (marker >= 0) {
    const double x = kPad + (kW - kPad) * marker / hi;
    s << "<line x1=\"" << Fixed(x, 1) << "\" y1=\"0\" x2=\"" << Fixed(x, 1) << "\" y2=\"" << kH
      << "\" stroke=\"#1d2330\" stroke-dasharray=\"4 3\"><title>threshold " << Fixed(marker, 4)
      << "</title></line>";
  }
  s << "<text x=\"2\" y=\"12\">" << top << "</text></svg>";
  return s.str();
}

// A reliability diagram: per confidence bin, the accuracy of the vote's share (red) and of
// the calibrated confidence (blue) as points against the diagonal of perfect calibration;
// each point's tooltip has the bin's rows, mean confidence and accuracy.
std::string ReliabilityDiagram(const Reliability& vote, const Reliability& calibrated) {
  constexpr int kS = 260, kPad = 30;
  std::ostringstream s;
  s << "<svg class=\"hist\" id=\"reliability\" viewBox=\"0 0 " << kS + kPad << " " << kS + kPad
    << "\" style=\"max-width:320px\" role=\"img\" aria-label=\"reliability diagram\">"
    << "<rect x=\"" << kPad << "\" y=\"0\" width=\"" << kS << "\" height=\"" << kS
    << "\" fill=\"none\" stroke=\"#ccc\"/><line x1=\"" << kPad << "\" y1=\"" << kS << "\" x2=\""
    << kPad + kS << "\" y2=\"0\" stroke=\"#999\" stroke-dasharray=\"4 3\"/>";
  auto points = [&](const Reliability& r, const char* cls, const char* name) {
    for (const ReliabilityBin& b : r.bins) {
      if (b.n == 0) continue;
      s << "<circle class=\"" << cls << "\" cx=\"" << Fixed(kPad + kS * b.confidence, 1)
        << "\" cy=\"" << Fixed(kS * (1 - b.accuracy), 1) << "\" r=\"4\" fill=\""
        << (cls[0] == 'o' ? "#2563eb" : "#dc2626") << "\"><title>" << name << ": " << b.n
        << " rows, confidence " << Fixed(b.confidence, 3) << ", accuracy " << Fixed(b.accuracy, 3)
        << "</title></circle>";
    }
  };
  points(vote, "bad", "vote share");
  points(calibrated, "ok", "calibrated");
  s << "<text x=\"" << kPad << "\" y=\"" << kS + 18 << "\">0</text><text x=\"" << kPad + kS
    << "\" y=\"" << kS + 18 << "\" text-anchor=\"end\">confidence 1</text><text x=\"2\" "
    << "y=\"12\">acc. 1</text></svg>";
  return s.str();
}

const char kStyle[] = R"css(
body { font: 14px/1.45 system-ui, sans-serif; color: #1d2330; margin: 24px; max-width: 1200px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; }
td, th { border: 1px solid #e4e7ec; padding: 4px 8px; text-align: right; }
th { background: #f7f8fa; } td.l, th.l { text-align: left; }
table.cm td { width: 52px; height: 34px; text-align: center; }
.hist { width: 100%; max-width: 720px; font-size: 11px; fill: #667085; }
.hist rect.ok { fill: #2563eb; } .hist rect.bad { fill: #dc2626; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; }
.pairs { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 12px; }
.pair { border: 1px solid #e4e7ec; border-radius: 6px; padding: 8px; font-size: 12px; }
.pair .imgs { display: flex; gap: 8px; }
.pair figure { margin: 0; flex: 1; word-break: break-all; }
.pair img, .nothumb { width: 100%; height: 140px; object-fit: contain; background: #f0f2f5; }
.nothumb { display: flex; align-items: center; justify-content: center; color: #999; }
.muted { color: #667085; }
.heat { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 12px; }
.heat figure { margin: 0; border: 1px solid #e4e7ec; border-radius: 6px; padding: 6px;
               font-size: 12px; word-break: break-all; }
.heat img { width: 100%; aspect-ratio: 1; object-fit: contain; background: #f0f2f5; }
)css";

// The page's head and title, up to the opened summary table.
void PageStart(std::ostringstream& h, const std::string& title) {
  h << "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>nearlabel: "
    << Escape(title) << "</title><style>" << kStyle << "</style></head><body>";
  h << "<h1>" << Escape(title) << "</h1><h2>Summary</h2><table id=\"summary\">";
}

// A summary row: `key` is text, `value_html` HTML.
void SummaryRow(std::ostringstream& h, const std::string& key, const std::string& value_html) {
  h << "<tr><th class=\"l\">" << Escape(key) << "</th><td class=\"l\">" << value_html
    << "</td></tr>";
}

}  // namespace

std::string ReportThumbnails::operator()(int64_t id) {
  size_t row = 0;
  if (id < 0) {
    row = static_cast<size_t>(-(id + 1));
  } else {
    auto jpeg = store_.GetThumbnail(id);
    if (jpeg.ok()) return *jpeg;
    if (row_.empty()) {
      for (size_t i = 0; i < table_.size(); ++i) row_.emplace(table_.ids[i], i);
    }
    auto it = row_.find(id);
    if (it == row_.end()) return "";
    row = it->second;
  }
  if (row >= table_.size()) return "";
  auto jpeg = ThumbnailOfFile(table_.sources[row]);
  return jpeg.ok() ? *jpeg : "";
}

std::string RenderEvalReport(const EvalReportPage& page) {
  const EvalReport& r = *page.report;
  std::ostringstream h;
  PageStart(h, "Evaluation of " + page.store);
  auto row = [&](const std::string& k, const std::string& v) { SummaryRow(h, k, v); };
  row("model", Escape(page.model));
  row("protocol", Escape(page.protocol));
  row("label", Escape(r.options.label_field));
  row("k, vote", std::to_string(r.options.k) + ", " + VoteName(r.options.vote));
  row("N", "<span id=\"n\">" + std::to_string(r.n) + "</span>");
  row("correct", std::to_string(r.correct));
  row("accuracy", "<b id=\"accuracy\">" + Fixed(100 * r.accuracy, 2) + "%</b>");
  if (page.plain) {
    row("plain leave-one-out (same rows, no grouping)",
        Fixed(100 * page.plain->accuracy, 2) + "% (" + std::to_string(page.plain->correct) +
            " of " + std::to_string(page.plain->n) + ")");
    row("group-aware minus plain",
        Fixed(100 * (r.accuracy - page.plain->accuracy), 2) +
            " points <span class=\"muted\">(plain leave-one-out counts near-duplicates of the "
            "same group as neighbours)</span>");
  }
  if (r.no_label || r.no_candidate) {
    row("not evaluated", std::to_string(r.no_label) + " rows without the label, " +
                             std::to_string(r.no_candidate) + " with no allowed neighbour");
  }
  h << "</table>";

  h << "<h2>Per class</h2><table id=\"per-class\"><tr><th class=\"l\">class</th><th>support</th>"
       "<th>predicted</th><th>precision</th><th>recall</th><th>F1</th></tr>";
  for (const ClassStats& s : r.per_class) {
    h << "<tr><td class=\"l\">" << Escape(s.label) << "</td><td>" << s.support << "</td><td>"
      << s.predicted << "</td><td>" << Fixed(s.precision, 4) << "</td><td>" << Fixed(s.recall, 4)
      << "</td><td>" << Fixed(s.f1, 4) << "</td></tr>";
  }
  h << "</table>";

  h << "<h2>Confusion matrix</h2><p class=\"muted\">rows: true class, columns: predicted; "
       "colour: share of the row</p><table class=\"cm\" id=\"confusion\"><tr><th></th>";
  for (const auto& c : r.classes) h << "<th>" << Escape(c) << "</th>";
  h << "</tr>";
  for (size_t t = 0; t < r.classes.size(); ++t) {
    size_t total = 0;
    for (size_t n : r.confusion[t]) total += n;
    h << "<tr><th class=\"l\">" << Escape(r.classes[t]) << "</th>";
    for (size_t p = 0; p < r.classes.size(); ++p) {
      const size_t n = r.confusion[t][p];
      const double share = total ? static_cast<double>(n) / static_cast<double>(total) : 0;
      const char* rgb = t == p ? "37,99,235" : "220,38,38";
      h << "<td class=\"cell\" data-count=\"" << n << "\" style=\"background:rgba(" << rgb << ","
        << Fixed(share * 0.85, 3) << ");color:" << (share > 0.5 ? "#fff" : "#1d2330")
        << "\" title=\"" << Escape(r.classes[t]) << " predicted as " << Escape(r.classes[p]) << ": "
        << n << "\">" << n << "</td>";
    }
    h << "</tr>";
  }
  h << "</table>";

  h << "<h2>Distance to the nearest neighbour</h2><p class=\"legend\"><span "
       "style=\"background:#2563eb\"></span>correct ("
    << r.nearest_distance_correct.size() << ")<span style=\"background:#dc2626\"></span>wrong ("
    << r.nearest_distance_wrong.size() << ")</p>"
    << Histogram(r.nearest_distance_correct, r.nearest_distance_wrong);

  if (!r.confidence_correct.empty()) {
    h << "<h2>Confidence</h2><p>expected calibration error <b id=\"ece\">"
      << Fixed(r.calibrated_reliability.ece, 4) << "</b> calibrated (temperature "
      << Fixed(r.calibration.temperature, 3) << ", floor " << Fixed(r.calibration.floor, 3) << "), "
      << Fixed(r.vote_reliability.ece, 4)
      << " as the vote's share <span class=\"muted\">(each half of the rows calibrated by the "
         "fit on the other half; 10 bins)</span></p><p class=\"legend\"><span "
         "style=\"background:#2563eb\"></span>calibrated<span "
         "style=\"background:#dc2626\"></span>vote's share</p>"
      << ReliabilityDiagram(r.vote_reliability, r.calibrated_reliability);
  }

  h << "<h2>Mistakes (" << r.mismatches.size() << ")</h2><div class=\"pairs\" id=\"mistakes\">";
  for (const EvalCase& c : r.mismatches) {
    const Neighbor& nb = c.neighbors.front();
    const std::string nb_label =
        MetadataField(ParseJson(page.table->metadata[nb.row]), r.options.label_field);
    h << "<div class=\"pair\"><div class=\"imgs\"><figure>" << Thumb(page, c.row)
      << "<figcaption><b>" << Escape(c.truth) << "</b> (truth), predicted <b>"
      << Escape(c.predicted) << "</b><br>" << RowName(page.table->ids[c.row]) << " "
      << Escape(page.table->sources[c.row]) << "</figcaption></figure><figure>"
      << Thumb(page, nb.row) << "<figcaption>nearest: <b>" << Escape(nb_label) << "</b>, distance "
      << Fixed(nb.distance, 4) << "<br>" << RowName(page.table->ids[nb.row]) << " "
      << Escape(page.table->sources[nb.row]) << "</figcaption></figure></div></div>";
  }
  h << "</div><p class=\"muted\">Written by nearlabel.</p></body></html>\n";
  return h.str();
}

std::string RenderAnomalyReport(const AnomalyReportPage& page) {
  std::ostringstream h;
  PageStart(h, "Anomaly evaluation of " + page.store);
  auto row = [&](const std::string& k, const std::string& v) { SummaryRow(h, k, v); };
  row("anomaly model", Escape(page.name) + " (patches of " + Escape(page.model) + ")");
  row("normal (bank, calibration, test)", Escape(page.normal));
  row("anomalous", Escape(page.anomalous));
  row("held-out normal images",
      "<span id=\"normal-n\">" + std::to_string(page.normal_scores.size()) + "</span>");
  row("anomalous images",
      "<span id=\"anomalous-n\">" + std::to_string(page.anomalous_scores.size()) + "</span>");
  row("image AUROC", "<b id=\"auroc\">" + Fixed(page.auroc, 4) + "</b>");
  row("calibrated threshold", Fixed(page.threshold, 4) + " <span class=\"muted\">(" +
                                  Fixed(100 * page.false_alarm_rate, 1) +
                                  "% false alarms on the calibration images)</span>");
  h << "</table>";

  h << "<h2>Thresholds</h2><table id=\"thresholds\"><tr><th class=\"l\">threshold</th>"
       "<th>score</th><th>false alarms</th><th>misses</th></tr>";
  for (const auto& t : page.thresholds) {
    h << "<tr><td class=\"l\">" << Escape(t.what) << "</td><td>" << Fixed(t.threshold, 4)
      << "</td><td>" << Fixed(100 * t.false_alarm_rate, 1) << "%</td><td>"
      << Fixed(100 * t.miss_rate, 1) << "%</td></tr>";
  }
  h << "</table>";

  h << "<h2>Scores</h2><p class=\"legend\"><span style=\"background:#2563eb\"></span>normal ("
    << page.normal_scores.size() << ")<span style=\"background:#dc2626\"></span>anomalous ("
    << page.anomalous_scores.size() << "); dashed: the calibrated threshold</p>"
    << Histogram(page.normal_scores, page.anomalous_scores, " normal", " anomalous",
                 "anomaly score", page.threshold);

  auto section = [&](const char* id, const std::string& title, const std::string& note,
                     const std::vector<AnomalyReportImage>& images, size_t total) {
    h << "<h2>" << Escape(title) << " (" << total << ")</h2>";
    if (images.size() < total) {
      h << "<p class=\"muted\">the " << images.size() << " " << note << " shown</p>";
    }
    h << "<div class=\"heat\" id=\"" << id << "\">";
    for (const AnomalyReportImage& im : images) {
      const std::string uri = DataUri(im.heatmap_jpeg, "image/jpeg");
      h << "<figure data-score=\"" << Fixed(im.score, 6) << "\">"
        << (uri.empty()
                ? "<div class=\"nothumb\">file unreadable</div>"
                : "<img src=\"" + uri + "\" alt=\"heat map of row " + std::to_string(im.id) + "\">")
        << "<figcaption>score <b>" << Fixed(im.score, 4) << "</b><br>#" << im.id << " "
        << Escape(im.source) << "</figcaption></figure>";
    }
    h << "</div>";
  };
  h << "<p class=\"muted\">Heat maps: every patch coloured from blue (like the normal images) "
       "to red (twice the threshold); patches above the threshold are outlined.</p>";
  section("missed", "Missed anomalies", "lowest-scoring are", page.missed, page.missed_total);
  section("false-alarms", "False alarms", "highest-scoring are", page.false_alarms,
          page.false_alarms_total);
  section("caught", "Caught anomalies", "highest-scoring are", page.caught, page.caught_total);
  h << "<p class=\"muted\">Written by nearlabel.</p></body></html>\n";
  return h.str();
}

}  // namespace nearlabel

namespace nearlabel {
namespace {

std::string ThumbOf(const AuditReportPage& page, int64_t id) {
  const std::string uri = page.thumbnail ? DataUri(page.thumbnail(id), "image/jpeg") : "";
  if (uri.empty()) return "<div class=\"nothumb\">no thumbnail</div>";
  return "<img src=\"" + uri + "\" alt=\"" + RowName(id) + "\">";
}

// One finding: figures of (id, source, caption HTML), in one .pair box.
void Finding(std::ostringstream& h, const AuditReportPage& page, const char* kind,
             const std::vector<std::tuple<int64_t, std::string, std::string>>& figures) {
  h << "<div class=\"pair finding\" data-kind=\"" << kind << "\"><div class=\"imgs\">";
  for (const auto& [id, source, caption] : figures) {
    h << "<figure>" << ThumbOf(page, id) << "<figcaption>" << caption << "<br>" << RowName(id)
      << " " << Escape(source) << "</figcaption></figure>";
  }
  h << "</div></div>";
}

void AuditLabelSection(std::ostringstream& h, const AuditReportPage& page) {
  const AuditReport& r = *page.report;
  const VectorTable& t = *page.table;
  h << "<h2>Likely label errors (" << r.label_issues.size()
    << ")</h2><p class=\"muted\">likeliest first; p = out-of-sample probability from the "
    << r.options.k << " nearest other rows' vote</p><div class=\"pairs\" id=\"label-issues\">";
  for (const LabelIssue& x : r.label_issues) {
    Finding(h, page, "label",
            {{t.ids[x.row], t.sources[x.row],
              "labelled <b>" + Escape(x.label) + "</b> (p " + Fixed(x.label_probability, 3) +
                  "), neighbours say <b>" + Escape(x.suggested) + "</b> (p " +
                  Fixed(x.suggested_probability, 3) + ")"}});
  }
  h << "</div>";
}

void AuditDuplicateSection(std::ostringstream& h, const AuditReportPage& page) {
  const AuditReport& r = *page.report;
  const VectorTable& t = *page.table;
  h << "<h2>Near-duplicate groups (" << r.duplicates.size()
    << ")</h2><p class=\"muted\">rows within cosine distance "
    << Fixed(r.options.duplicate_distance, 3) << " of another row of the group</p>"
    << "<div class=\"pairs\" id=\"duplicates\">";
  for (const DuplicateGroup& d : r.duplicates) {
    std::vector<std::tuple<int64_t, std::string, std::string>> figures;
    for (size_t row : d.rows) {
      figures.emplace_back(t.ids[row], t.sources[row], "<b>" + Escape(r.labels[row]) + "</b>");
    }
    Finding(h, page, "dup", figures);
  }
  h << "</div>";
}

void AuditOutlierSection(std::ostringstream& h, const AuditReportPage& page) {
  const AuditReport& r = *page.report;
  const VectorTable& t = *page.table;
  h << "<h2>Outliers (" << r.outliers.size() << ")</h2><p class=\"muted\">nearest other row "
    << "farther than " << Fixed(r.outlier_distance, 3) << "</p><div class=\"pairs\" "
    << "id=\"outliers\">";
  for (const Outlier& o : r.outliers) {
    Finding(h, page, "outlier",
            {{t.ids[o.row], t.sources[o.row],
              "<b>" + Escape(r.labels[o.row]) + "</b>, nearest other row at " +
                  Fixed(o.nearest_distance, 3)}});
  }
  h << "</div>";
}

void AuditLeakageSection(std::ostringstream& h, const AuditReportPage& page) {
  const LeakageReport& l = *page.leakage;
  const VectorTable& t = *page.table;
  h << "<h2>Leakage (" << l.leaked.size() << " of " << l.queries
    << " queries)</h2><div class=\"pairs\" id=\"leakage\">";
  for (const LeakedQuery& x : l.leaked) {
    const int64_t qid = -static_cast<int64_t>(x.query) - 1;
    Finding(h, page, "leak",
            {{qid, page.queries->sources[x.query],
              std::string(x.identical ? "byte-identical" : "near copy") + ", distance " +
                  Fixed(x.distance, 4)},
             {t.ids[x.row], t.sources[x.row], "its copy in the store"}});
  }
  h << "</div>";
}

}  // namespace

std::string RenderAuditReport(const AuditReportPage& page) {
  const AuditReport& r = *page.report;
  std::ostringstream h;
  PageStart(h, "Audit of " + page.store);
  SummaryRow(h, "rows audited",
             std::to_string(r.rows) + " labelled '" + Escape(r.options.label_field) + "' (" +
                 std::to_string(r.unlabelled) + " without it)");
  SummaryRow(h, "likely label errors", std::to_string(r.label_issues.size()));
  SummaryRow(h, "near-duplicate groups", std::to_string(r.duplicates.size()));
  SummaryRow(h, "outliers", std::to_string(r.outliers.size()));
  if (page.leakage) {
    const LeakageReport& l = *page.leakage;
    SummaryRow(h, "leaked queries",
               std::to_string(l.leaked.size()) + " of " + std::to_string(l.queries) + " (" +
                   std::to_string(l.identical) + " byte-identical, " + std::to_string(l.near) +
                   " near)");
    if (l.accuracy >= 0) {
      SummaryRow(h, "query 1-NN accuracy",
                 Fixed(100 * l.accuracy, 2) + "% over all, " +
                     (l.accuracy_without_leaked >= 0 ? Fixed(100 * l.accuracy_without_leaked, 2)
                                                     : std::string("-")) +
                     "% without the leaked ones");
    }
  }
  h << "</table>";
  AuditLabelSection(h, page);
  AuditDuplicateSection(h, page);
  AuditOutlierSection(h, page);
  if (page.leakage) AuditLeakageSection(h, page);
  h << "<p class=\"muted\">Written by nearlabel.</p></body></html>\n";
  return h.str();
}

}  // namespace nearlabel
