// `nearlabel audit`: parses, calls AuditTable / AuditLeakage, renders text, JSON or HTML.
#include "cli/cli.h"
#include "eval/report.h"
#include "nearlabel/audit.h"

namespace nearlabel::cli {
namespace {

struct AuditArgs {
  std::string store, label, group_by, where, queries, query_layout = "auto", report;
  AuditOptions options;
  int show = 20;
};

// The audited queries: embedded as classify would, never stored.
struct QuerySet {
  VectorTable table;
  ImageKeys keys;
  std::vector<DatasetProblem> problems;
};

// PerceptualHash of a thumbnail's JPEG bytes (nullopt when there are none or they do not
// decode). Both sides hash thumbnails made alike (EncodeThumbnail), so their sizes agree.
std::optional<uint64_t> ThumbnailHash(const std::string& jpeg) {
  if (jpeg.empty()) return std::nullopt;
  auto img = DecodeImage(jpeg);
  if (!img.ok()) return std::nullopt;
  return PerceptualHash(*img);
}

Result<QuerySet> EmbedQueries(const AuditArgs& a, const CollectionInfo& info, const Global& g) {
  NL_ASSIGN_OR_RETURN(DatasetLayout layout, ParseDatasetLayout(a.query_layout));
  NL_ASSIGN_OR_RETURN(DatasetListing listing, ListDataset(a.queries, layout));
  if (listing.items.empty())
    return Status::NotFound("--queries " + a.queries + ": no images found");
  NL_ASSIGN_OR_RETURN(auto embedder, OpenEmbedderForStore(a.store, &info, "", g, false));
  std::vector<std::string> paths;
  for (const auto& item : listing.items) paths.push_back(item.image_path);
  QuerySet q;
  q.table.dims = info.dims;
  q.problems = listing.problems;
  std::vector<EmbeddedFile> files = EmbedFiles(paths, *embedder);
  for (size_t i = 0; i < files.size(); ++i) {
    if (!files[i].status.ok()) {
      q.problems.push_back({files[i].path, files[i].status.message()});
      continue;
    }
    q.table.ids.push_back(-static_cast<int64_t>(q.table.ids.size()) - 1);  // report.h's query ids
    q.table.sources.push_back(files[i].path);
    q.table.metadata.push_back(listing.items[i].metadata.dump());
    q.table.vectors.insert(q.table.vectors.end(), files[i].embedding.begin(),
                           files[i].embedding.end());
    q.keys.sha256.push_back(files[i].sha256);
    auto thumb = ThumbnailOfFile(files[i].path);
    q.keys.phash.push_back(thumb.ok() ? ThumbnailHash(*thumb) : std::nullopt);
  }
  return q;
}

// sha256 and thumbnail hash of each row of `table`, from the store (a row without a stored
// thumbnail is hashed from its file while that is there).
Result<ImageKeys> RowKeys(Store& store, const VectorTable& table) {
  NL_ASSIGN_OR_RETURN(auto res, store.Execute("SELECT id, sha256 FROM items"));
  std::unordered_map<int64_t, std::string> by_id;
  for (const auto& row : res.at(0).rows) {
    if (row.size() == 2 && std::holds_alternative<int64_t>(row[0]) &&
        std::holds_alternative<std::string>(row[1])) {
      by_id[std::get<int64_t>(row[0])] = std::get<std::string>(row[1]);
    }
  }
  ImageKeys keys;
  ReportThumbnails thumbnails(store, table);
  for (int64_t id : table.ids) {
    keys.sha256.push_back(by_id.count(id) ? by_id[id] : "");
    keys.phash.push_back(ThumbnailHash(thumbnails(id)));
  }
  return keys;
}

std::string Percent(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", 100 * v);
  return buf;
}
std::string Fixed3(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  return buf;
}

json AuditJson(const AuditReport& r, const VectorTable& t, const LeakageReport* leak,
               const QuerySet* q) {
  json j = {{"rows", r.rows},
            {"unlabelled", r.unlabelled},
            {"label", r.options.label_field},
            {"k", r.options.k},
            {"duplicate_distance", r.options.duplicate_distance},
            {"outlier_distance", r.outlier_distance}};
  j["label_issues"] = json::array();
  for (const auto& i : r.label_issues) {
    j["label_issues"].push_back({{"id", t.ids[i.row]},
                                 {"source", t.sources[i.row]},
                                 {"label", i.label},
                                 {"suggested", i.suggested},
                                 {"label_probability", i.label_probability},
                                 {"suggested_probability", i.suggested_probability},
                                 {"margin", i.margin},
                                 {"confident", i.confident}});
  }
  j["duplicates"] = json::array();
  for (const auto& d : r.duplicates) {
    json ids = json::array(), labels = json::array();
    for (size_t row : d.rows) ids.push_back(t.ids[row]), labels.push_back(r.labels[row]);
    j["duplicates"].push_back({{"ids", ids},
                               {"labels", labels},
                               {"max_distance", d.max_distance},
                               {"mixed_labels", d.mixed_labels}});
  }
  j["outliers"] = json::array();
  for (const auto& o : r.outliers) {
    j["outliers"].push_back({{"id", t.ids[o.row]},
                             {"source", t.sources[o.row]},
                             {"label", r.labels[o.row]},
                             {"nearest_distance", o.nearest_distance}});
  }
  if (leak) {
    json leaked = json::array();
    for (const auto& l : leak->leaked) {
      leaked.push_back({{"query", q->table.sources[l.query]},
                        {"id", t.ids[l.row]},
                        {"source", t.sources[l.row]},
                        {"distance", l.distance},
                        {"identical", l.identical}});
    }
    j["leakage"] = {{"queries", leak->queries},
                    {"identical", leak->identical},
                    {"near", leak->near},
                    {"share", leak->queries ? double(leak->leaked.size()) / leak->queries : 0.0},
                    {"accuracy", leak->accuracy},
                    {"accuracy_without_leaked", leak->accuracy_without_leaked},
                    {"leaked", leaked}};
  }
  return j;
}

void PrintLabelIssues(const AuditReport& r, const VectorTable& t, size_t show) {
  std::printf(
      "\nlikely label errors: %zu (confident learning over %d-NN leave-one-out votes; "
      "likeliest first)\n",
      r.label_issues.size(), r.options.k);
  std::vector<std::vector<std::string>> rows;
  for (size_t i = 0; i < r.label_issues.size() && i < show; ++i) {
    const LabelIssue& x = r.label_issues[i];
    rows.push_back({std::to_string(i + 1), std::to_string(t.ids[x.row]), TerminalSafe(x.label),
                    TerminalSafe(x.suggested), Fixed3(x.label_probability),
                    Fixed3(x.suggested_probability), x.confident ? "yes" : "",
                    TerminalSafe(t.sources[x.row])});
  }
  if (!rows.empty()) {
    PrintTable(
        {"rank", "id", "label", "suggested", "p(label)", "p(suggested)", "confident", "source"},
        rows);
  }
}

void PrintDuplicates(const AuditReport& r, const VectorTable& t, size_t show) {
  size_t in_groups = 0, mixed = 0;
  for (const auto& d : r.duplicates) in_groups += d.rows.size(), mixed += d.mixed_labels;
  std::printf(
      "\nnear-duplicate groups (cosine distance <= %g): %zu groups of %zu rows, %zu with "
      "more than one label\n",
      r.options.duplicate_distance, r.duplicates.size(), in_groups, mixed);
  std::vector<std::vector<std::string>> rows;
  for (size_t i = 0; i < r.duplicates.size() && i < show; ++i) {
    const DuplicateGroup& d = r.duplicates[i];
    std::string ids, labels;
    for (size_t row : d.rows) {
      ids += (ids.empty() ? "" : " ") + std::to_string(t.ids[row]);
      if (labels.find(r.labels[row]) == std::string::npos) {
        labels += (labels.empty() ? "" : ", ") + r.labels[row];
      }
    }
    rows.push_back({std::to_string(d.rows.size()), Fixed3(d.max_distance), TerminalSafe(labels),
                    ids, TerminalSafe(t.sources[d.rows[0]])});
  }
  if (!rows.empty()) PrintTable({"rows", "max dist", "labels", "ids", "first source"}, rows);
}

void PrintOutliers(const AuditReport& r, const VectorTable& t, size_t show) {
  std::printf("\noutliers (nearest other row farther than %.3f): %zu\n", r.outlier_distance,
              r.outliers.size());
  std::vector<std::vector<std::string>> rows;
  for (size_t i = 0; i < r.outliers.size() && i < show; ++i) {
    const Outlier& o = r.outliers[i];
    rows.push_back({std::to_string(t.ids[o.row]), Fixed3(o.nearest_distance), r.labels[o.row],
                    TerminalSafe(t.sources[o.row])});
  }
  if (!rows.empty()) PrintTable({"id", "nearest", "label", "source"}, rows);
}

void PrintLeakage(const LeakageReport& l, const QuerySet& q, const VectorTable& t, size_t show,
                  double distance, int hash_bits) {
  std::printf(
      "\nleakage: %zu of %zu query images have a copy in the store (%s): %zu byte-identical, "
      "%zu near copies (perceptual hash within %d bits or cosine distance <= %g)\n",
      l.leaked.size(), l.queries,
      Percent(l.queries ? double(l.leaked.size()) / l.queries : 0).c_str(), l.identical, l.near,
      hash_bits, distance);
  if (l.accuracy >= 0) {
    std::printf(
        "  1-NN accuracy of the queries: %s over all %zu, %s without the leaked ones "
        "(%zu)\n",
        Percent(l.accuracy).c_str(), l.scored,
        l.accuracy_without_leaked >= 0 ? Percent(l.accuracy_without_leaked).c_str() : "-",
        l.scored_without_leaked);
  }
  std::vector<std::vector<std::string>> rows;
  for (size_t i = 0; i < l.leaked.size() && i < show; ++i) {
    const LeakedQuery& x = l.leaked[i];
    rows.push_back({TerminalSafe(q.table.sources[x.query]), x.identical ? "identical" : "near",
                    Fixed3(x.distance), x.hash_distance < 0 ? "-" : std::to_string(x.hash_distance),
                    std::to_string(t.ids[x.row]), TerminalSafe(t.sources[x.row])});
  }
  if (!rows.empty()) {
    PrintTable({"query", "copy", "distance", "hash bits", "id", "store source"}, rows);
  }
}

int RunAudit(AuditArgs a, const Global& g) {
  auto opened = OpenIngested(a.store, "majority");
  if (!opened.ok()) return Fail(opened.status());
  auto table = opened->store->LoadVectors(a.where);
  if (!table.ok()) return Fail(table.status());
  WarnDamaged(*table, *opened->store);
  a.options.label_field = !a.label.empty() ? a.label : opened->info.label_field;
  a.options.group_field = a.group_by;
  auto keys = RowKeys(*opened->store, *table);
  if (!keys.ok()) return Fail(keys.status());
  VectorTable audited;
  auto rep = AuditTable(*table, a.options, &audited, &*keys);
  if (!rep.ok()) return Fail(rep.status());
  ImageKeys audited_keys;  // the audited rows' keys, for the leakage
  for (size_t r : rep->table_rows) {
    audited_keys.sha256.push_back(keys->sha256[r]);
    audited_keys.phash.push_back(keys->phash[r]);
  }
  std::optional<QuerySet> queries;
  std::optional<LeakageReport> leak;
  if (!a.queries.empty()) {
    auto q = EmbedQueries(a, opened->info, g);
    if (!q.ok()) return Fail(q.status().WithContext("--queries"));
    queries = std::move(*q);
    for (const auto& p : queries->problems) {
      std::fprintf(stderr, "nearlabel: warning: %s: %s (not audited)\n",
                   TerminalSafe(p.path).c_str(), TerminalSafe(p.reason).c_str());
    }
    leak = AuditLeakage(audited, audited_keys, queries->table, queries->keys, a.options);
  }
  if (!a.report.empty()) {
    AuditReportPage page{MaskedLocation(a.store),
                         &*rep,
                         &audited,
                         leak ? &*leak : nullptr,
                         queries ? &queries->table : nullptr,
                         {}};
    ReportThumbnails thumbs(*opened->store, audited);
    ReportThumbnails query_thumbs(*opened->store, queries ? queries->table : audited);
    page.thumbnail = [&](int64_t id) { return id < 0 ? query_thumbs(id) : thumbs(id); };
    Status st = WriteFileAtomically(a.report, RenderAuditReport(page));
    if (!st.ok()) return Fail(st);
    std::fprintf(stderr, "nearlabel: report written to %s\n", a.report.c_str());
  }
  if (g.json) {
    PrintJson(AuditJson(*rep, audited, leak ? &*leak : nullptr, queries ? &*queries : nullptr));
    return 0;
  }
  const size_t show = a.show < 0 ? SIZE_MAX : static_cast<size_t>(a.show);
  std::printf("audit of %s: %zu rows labelled '%s' (%zu without it, not audited)%s\n",
              MaskedLocation(a.store).c_str(), rep->rows, a.options.label_field.c_str(),
              rep->unlabelled,
              a.group_by.empty() ? "" : (", votes never from the same " + a.group_by).c_str());
  PrintLabelIssues(*rep, audited, show);
  PrintDuplicates(*rep, audited, show);
  PrintOutliers(*rep, audited, show);
  if (leak) {
    PrintLeakage(*leak, *queries, audited, show, a.options.duplicate_distance, a.options.hash_bits);
  }
  return 0;
}

}  // namespace

void AddAuditCommand(CLI::App& app, const Global& g, Runner* run) {
  static AuditArgs aa;
  auto* audit = app.add_subcommand(
      "audit",
      "Check a store's data: likely label errors (rows whose leave-one-out neighbours "
      "confidently vote for another class), near-duplicate groups, outliers, and with "
      "--queries the test images that have a copy in the store. Reads only.");
  audit->add_option("store", aa.store, kStoreHelp)->required();
  audit->add_option("--label", aa.label, "Field audited (default: the store's label field)");
  audit->add_option("--group-by", aa.group_by,
                    "Votes never come from a row with the same value of this field (e.g. "
                    "tile_group), so bursts of one object cannot vouch for each other");
  audit->add_option("--where", aa.where, "SQL condition selecting the rows audited");
  audit->add_option("-k,--k", aa.options.k, "Neighbours that vote for each row")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  audit
      ->add_option("--near", aa.options.duplicate_distance,
                   "Near duplicates: cosine distance at or below which two images count as "
                   "copies (0: identical features; how far re-encoded copies and different "
                   "photos lie depends on the data and the embedding options: bench/README.md, "
                   "\"Audit\")")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  audit
      ->add_option("--outlier-iqr", aa.options.outlier_iqr,
                   "Outliers: nearest other row farther than the upper quartile of nearest "
                   "distances plus this many interquartile ranges")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 100.0));
  audit
      ->add_option("--queries", aa.queries,
                   "A test set (any layout ingest reads) checked for leakage: the share of its "
                   "images with a byte-identical or near copy in the store, and its 1-NN "
                   "accuracy with and without them")
      ->type_name("DATASET");
  audit
      ->add_option("--query-layout", aa.query_layout,
                   "With --queries: auto, aihub, folder or "
                   "manifest")
      ->capture_default_str();
  audit->add_option("--show", aa.show, "Findings listed per section (-1: all; --json lists all)")
      ->capture_default_str();
  audit->add_option("--report", aa.report,
                    "Also write a self-contained HTML report with a thumbnail for every finding");
  audit->callback([&g, run] { *run = [&g] { return RunAudit(aa, g); }; });
}

}  // namespace nearlabel::cli
