#include "cli/cli.h"

namespace nearlabel::cli {
namespace {

// ---------------------------------------------------------------- eval
struct EvalArgs {
  std::string store, label, within, group_by, vote = "majority", where, report, open_set;
  int k = 1;
  int show = -1;
  double reject_quantile = 0.97;
  std::string patch_normal;
  PatchEvalOptions patch;
  std::string queries, query_label, query_layout = "auto";  // eval --queries
  bool exact = false;
  int ef = 0;
};

// eval --patch-normal: the patch-aware prediction of every row of `table`.
Result<EvalReport> PatchEval(const EvalArgs& a, const VectorTable& table, const EvalOptions& opt,
                             const CollectionInfo& info, const Global& g) {
  std::string sha;
  NL_ASSIGN_OR_RETURN(auto embedder, OpenPatchEmbedder(a.store, info, g, false, &sha));
  PatchEvalOptions po = a.patch;
  po.label_field = opt.label_field;
  po.group_field = opt.group_field;
  po.normal_label = a.patch_normal;
  const ModelCard& card = embedder->card();
  const PatchProjector projector = PatchProjector::Create(card.dims, card.patch_grid, po.features);
  PatchEvalInput in;
  in.dims = projector.dims();
  for (const auto& m : table.metadata) {
    json meta = ParseMeta(m);
    in.labels.push_back(MetadataField(meta, opt.label_field));
    in.groups.push_back(opt.group_field.empty() ? "" : MetadataField(meta, opt.group_field));
  }
  // In chunks: raw maps are large (28 x 28 x 192 floats an image), projected ones small.
  ProgressBar bar("patches");
  constexpr size_t kChunk = 64;
  for (size_t at = 0; at < table.size(); at += kChunk) {
    std::vector<std::string> paths(
        table.sources.begin() + static_cast<ptrdiff_t>(at),
        table.sources.begin() + static_cast<ptrdiff_t>(std::min(table.size(), at + kChunk)));
    for (PatchMap& p : ReadPatchMaps(paths, *embedder)) {
      if (!p.status.ok()) {
        std::fprintf(stderr, "nearlabel: warning: %s: %s (not evaluated)\n",
                     TerminalSafe(p.path).c_str(), TerminalSafe(p.status.message()).c_str());
        in.patches.emplace_back();
        continue;
      }
      in.patches.push_back(PoolPatches(projector, p.raw.data(), po.pool, &in.patches_per_row));
    }
    bar.Update(std::min(table.size(), at + kChunk), table.size());
  }
  bar.Finish();
  NL_ASSIGN_OR_RETURN(PatchEvalResult r, PatchLeaveOneGroupOut(in, po));
  std::vector<Neighbor> evidence;
  for (size_t i = 0; i < table.size(); ++i) {
    evidence.push_back({r.evidence_row[i], r.evidence_distance[i]});
  }
  return ReportFromPredictions(opt, in.labels, r.predicted, evidence);
}

// eval --open-set: hold each chosen class out in turn and report rejection rates.
int RunOpenSetEval(const EvalArgs& a, const VectorTable& table, const std::string& label_field,
                   const Global& g) {
  std::vector<std::string> classes;
  if (a.open_set == "all") {
    std::set<std::string> seen;
    for (const auto& m : table.metadata) {
      std::string l = MetadataField(ParseMeta(m), label_field);
      if (!l.empty()) seen.insert(l);
    }
    classes.assign(seen.begin(), seen.end());
  } else {
    classes.push_back(a.open_set);
  }
  json out = json::array();
  std::vector<std::vector<std::string>> rows;
  for (const auto& c : classes) {
    auto rep = EvaluateOpenSet(table, label_field, c, a.reject_quantile);
    if (!rep.ok()) return Fail(rep.status());
    auto pct = [](size_t x, size_t n) { return n ? 100.0 * x / n : 0.0; };
    out.push_back({{"unknown_class", c},
                   {"quantile", a.reject_quantile},
                   {"reference_rows", rep->reference_rows},
                   {"unknown_rows", rep->unknown_rows},
                   {"unknown_rejected", rep->unknown_rejected},
                   {"known_rows", rep->known_rows},
                   {"known_rejected", rep->known_rejected},
                   {"known_correct", rep->known_correct}});
    rows.push_back({c, std::to_string(rep->unknown_rows),
                    FormatDouble(pct(rep->unknown_rejected, rep->unknown_rows), 1) + "%",
                    std::to_string(rep->known_rows),
                    FormatDouble(pct(rep->known_rejected, rep->known_rows), 1) + "%",
                    FormatDouble(pct(rep->known_correct, rep->known_rows), 1) + "%"});
  }
  if (g.json) {
    PrintJson(out);
    return 0;
  }
  std::printf(
      "open set, label '%s': each class below held out entirely in turn; the other classes' "
      "rows split in half at random, one half calibrates per-class thresholds (the %.0fth "
      "percentile of leave-one-out nearest distances of correct matches) and answers, the other "
      "half and the held-out class are queries (1-NN, cosine)\n",
      label_field.c_str(), 100 * a.reject_quantile);
  PrintTable({"held-out class", "its rows", "caught as unknown", "known rows", "wrongly rejected",
              "accepted and right"},
             rows);
  return 0;
}

// What an evaluation found, for the renderers.
struct EvalOutcome {
  std::string protocol, rule, label_field;
  Vote vote = Vote::kMajority;
  const VectorTable* table = nullptr;
  EvalReport report;
  std::optional<EvalReport> global;  // patch-aware runs: the global k-NN figure beside it
};

json MismatchJson(const EvalOutcome& o, const EvalCase& c) {
  const VectorTable& t = *o.table;
  const Neighbor& nb = c.neighbors.front();
  const int64_t id = t.ids[c.row];  // < 0: a held-out query, not a store row
  return json{{"id", id < 0 ? json(nullptr) : json(id)},
              {"source", t.sources[c.row]},
              {"truth", c.truth},
              {"predicted", c.predicted},
              {"nearest_id", t.ids[nb.row]},
              {"nearest_source", t.sources[nb.row]},
              {"nearest_label", MetadataField(ParseMeta(t.metadata[nb.row]), o.label_field)},
              {"distance", nb.distance}};
}

// eval --report: one HTML file; a group-aware evaluation is compared with plain leave-one-out.
Status WriteEvalReport(const EvalArgs& a, const EvalOptions& opt, const EvalOutcome& o,
                       Store& store, const CollectionInfo& info) {
  const VectorTable& table = *o.table;
  Result<EvalReport> plain = Status::NotFound("");
  if (!a.group_by.empty() && a.queries.empty()) {
    EvalOptions plain_opt = opt;
    plain_opt.group_field.clear();
    NL_ASSIGN_OR_RETURN(plain, LeaveOneOut(table, plain_opt));
  }
  EvalReportPage page;
  page.store = a.store;
  page.model = info.model;
  page.protocol = o.protocol + ", " + std::to_string(a.k) + "-NN, cosine distance" + o.rule;
  page.report = &o.report;
  page.plain = plain.ok() ? &*plain : nullptr;
  page.table = &table;
  ReportThumbnails thumbnails(store, table);
  page.thumbnail = [&thumbnails](int64_t id) { return thumbnails(id); };
  NL_RETURN_IF_ERROR(WriteFileAtomically(a.report, RenderEvalReport(page)));
  std::fprintf(stderr, "nearlabel: report written to %s\n", a.report.c_str());
  return Status::OK();
}

// The confidences' reliability, before (the vote's share) and after calibration.
json CalibrationJson(const EvalReport& r) {
  auto bins = [](const Reliability& rel) {
    json out = json::array();
    for (const auto& b : rel.bins) {
      out.push_back({{"lo", b.lo},
                     {"hi", b.hi},
                     {"n", b.n},
                     {"confidence", b.confidence},
                     {"accuracy", b.accuracy}});
    }
    return out;
  };
  return {{"ece_vote_share", r.vote_reliability.ece},
          {"ece_calibrated", r.calibrated_reliability.ece},
          {"temperature", r.calibration.temperature},
          {"floor", r.calibration.floor},
          {"bins_vote_share", bins(r.vote_reliability)},
          {"bins_calibrated", bins(r.calibrated_reliability)}};
}

// The reliability diagram as a table: per confidence bin, rows and the mean confidence
// against the accuracy, before and after calibration.
void PrintCalibration(const EvalReport& r) {
  if (r.confidence_correct.empty()) return;
  std::printf(
      "\nconfidence: expected calibration error %.4f as the vote's share, %.4f "
      "calibrated (temperature %.3g, floor %.3g, fitted by leave-one-out on the other "
      "half of the rows)\n",
      r.vote_reliability.ece, r.calibrated_reliability.ece, r.calibration.temperature,
      r.calibration.floor);
  std::vector<std::vector<std::string>> rows;
  for (size_t b = 0; b < r.calibrated_reliability.bins.size(); ++b) {
    const ReliabilityBin& v = r.vote_reliability.bins[b];
    const ReliabilityBin& c = r.calibrated_reliability.bins[b];
    if (v.n == 0 && c.n == 0) continue;
    rows.push_back({FormatDouble(c.lo, 1) + "-" + FormatDouble(c.hi, 1), std::to_string(v.n),
                    v.n ? FormatDouble(v.accuracy, 3) : "-", std::to_string(c.n),
                    c.n ? FormatDouble(c.confidence, 3) : "-",
                    c.n ? FormatDouble(c.accuracy, 3) : "-"});
  }
  PrintTable(
      {"confidence", "rows (vote share)", "accuracy", "rows (calibrated)", "mean conf", "accuracy"},
      rows);
}

void PrintEvalJson(const EvalArgs& a, const EvalOutcome& o) {
  const EvalReport& r = o.report;
  json j = {{"protocol", o.protocol},
            {"label", o.label_field},
            {"within", a.within},
            {"group_by", a.group_by},
            {"k", a.k},
            {"vote", VoteName(o.vote)},
            {"rows", r.rows},
            {"n", r.n},
            {"correct", r.correct},
            {"accuracy", r.accuracy},
            {"skipped_no_label", r.no_label},
            {"skipped_no_candidate", r.no_candidate},
            {"global_accuracy", o.global ? json(o.global->accuracy) : json(nullptr)},
            {"classes", r.classes},
            {"confusion", r.confusion},
            {"per_class", json::array()},
            {"mismatches", json::array()}};
  for (const auto& s : r.per_class) {
    j["per_class"].push_back({{"label", s.label},
                              {"support", s.support},
                              {"precision", s.precision},
                              {"recall", s.recall},
                              {"f1", s.f1}});
  }
  for (const auto& c : r.mismatches) j["mismatches"].push_back(MismatchJson(o, c));
  if (!r.confidence_correct.empty()) j["calibration"] = CalibrationJson(r);
  PrintJson(j);
}

// Per-class table and confusion matrix.
void PrintClassTables(const EvalReport& r) {
  std::printf("\nper class:\n");
  std::vector<std::vector<std::string>> rows;
  for (const auto& s : r.per_class) {
    rows.push_back({s.label, std::to_string(s.support), FormatDouble(s.precision, 4),
                    FormatDouble(s.recall, 4), FormatDouble(s.f1, 4)});
  }
  PrintTable({"class", "support", "precision", "recall", "f1"}, rows);
  std::printf("\nconfusion matrix (rows: truth, columns: predicted):\n");
  std::vector<std::string> header{"truth \\ predicted"};
  header.insert(header.end(), r.classes.begin(), r.classes.end());
  rows.clear();
  for (size_t i = 0; i < r.classes.size(); ++i) {
    std::vector<std::string> row{r.classes[i]};
    for (size_t v : r.confusion[i]) row.push_back(std::to_string(v));
    rows.push_back(row);
  }
  PrintTable(header, rows);
}

void PrintEvalText(const EvalArgs& a, const EvalOutcome& o) {
  const EvalReport& r = o.report;
  std::printf("%s, %d-NN (%s vote), cosine distance, label '%s'%s\n", o.protocol.c_str(), a.k,
              VoteName(o.vote), TerminalSafe(o.label_field).c_str(), TerminalSafe(o.rule).c_str());
  std::printf("N = %zu, correct = %zu, accuracy = %.2f%%  (%zu of %zu correct)\n", r.n, r.correct,
              100 * r.accuracy, r.correct, r.n);
  if (o.global) {
    std::printf(
        "global %d-NN on the same rows and protocol: accuracy = %.2f%% (%zu of %zu); "
        "patch-aware is %+.2f points\n",
        a.k, 100 * o.global->accuracy, o.global->correct, o.global->n,
        100 * (r.accuracy - o.global->accuracy));
  }
  if (r.no_label || r.no_candidate) {
    std::printf("not evaluated: %zu rows without '%s', %zu rows with no allowed neighbour\n",
                r.no_label, o.label_field.c_str(), r.no_candidate);
  }
  PrintClassTables(r);
  PrintCalibration(r);
  size_t show = a.show < 0 ? r.mismatches.size() : static_cast<size_t>(a.show);
  std::printf("\nmismatches (%zu)%s:\n", r.mismatches.size(),
              show < r.mismatches.size() ? (", first " + std::to_string(show)).c_str() : "");
  std::vector<std::vector<std::string>> rows;
  for (size_t i = 0; i < r.mismatches.size() && i < show; ++i) {
    json m = MismatchJson(o, r.mismatches[i]);
    rows.push_back({m["id"].is_null() ? "query" : std::to_string(m["id"].get<int64_t>()),
                    m["truth"], m["predicted"], std::to_string(m["nearest_id"].get<int64_t>()),
                    m["nearest_label"], FormatDouble(m["distance"].get<double>(), 4), m["source"],
                    m["nearest_source"]});
  }
  if (!rows.empty()) {
    PrintTable({"id", "truth", "predicted", "nearest", "its label", "distance", "source",
                "nearest source"},
               rows);
  }
}

// eval --queries: a held-out labelled dataset classified against the store (the same engine
// and options as `classify`), reported as leave-one-out is.
int RunQueryEval(const EvalArgs& a, const Global& g, Ingested& opened, const EvalOptions& opt) {
  auto layout = ParseDatasetLayout(a.query_layout);
  if (!layout.ok()) return Fail(layout.status().WithContext("--query-layout"));
  auto listing = ListDataset(a.queries, *layout);
  if (!listing.ok()) return Fail(listing.status().WithContext("--queries"));
  if (listing->items.empty()) {
    return Fail(Status::NotFound("--queries " + a.queries + ": no images found (layout " +
                                 DatasetLayoutName(listing->layout) + ")"));
  }
  CollectionOptions copt;
  copt.use_index = !a.exact;
  auto collection = Collection::Open(a.store, copt);
  if (!collection.ok()) return Fail(collection.status());
  auto embedder = OpenEmbedderForStore(a.store, &opened.info, "", g, false);
  if (!embedder.ok()) return Fail(embedder.status());
  QueryEvalOptions qo;
  qo.eval = opt;
  qo.query_label = a.query_label;
  qo.where_sql = a.where;
  qo.exact = a.exact;
  qo.ef = a.ef;
  static std::atomic<bool> stop{false};
  std::signal(SIGINT, [](int) {
    stop = true;
    std::signal(SIGINT, SIG_DFL);
  });
  ProgressBar bar("eval");
  auto result = EvaluateQueries(
      **collection, **embedder, *listing, qo,
      [&bar](size_t done, size_t total) { bar.Update(done, total); }, &stop);
  bar.Finish();
  std::signal(SIGINT, SIG_DFL);
  if (!result.ok()) return Fail(result.status());
  for (const DatasetProblem& p : result->problems) {
    std::fprintf(stderr, "nearlabel: warning: %s: %s (not evaluated)\n",
                 TerminalSafe(p.path).c_str(), TerminalSafe(p.reason).c_str());
  }
  EvalOutcome o;
  o.protocol = "held-out queries " + listing->root + " (" + std::to_string(result->queries) +
               " images, " + DatasetLayoutName(listing->layout) + " layout)";
  if (!a.query_label.empty()) o.protocol += ", their label '" + a.query_label + "'";
  if (!a.group_by.empty()) o.protocol += ", never a store row of the same " + a.group_by;
  o.rule = a.within.empty() ? "" : ", neighbours within the query's " + a.within;
  o.label_field = opt.label_field;
  o.vote = opt.vote;
  o.table = &result->shown;
  o.report = std::move(result->report);
  if (!a.report.empty()) {
    Status st = WriteEvalReport(a, opt, o, *opened.store, opened.info);
    if (!st.ok()) return Fail(st);
  }
  if (g.json) {
    PrintEvalJson(a, o);
  } else {
    PrintEvalText(a, o);
  }
  if (result->interrupted) {
    std::fprintf(stderr, "nearlabel: interrupted: the figures above cover the %zu queries done\n",
                 result->queries);
    return 1;
  }
  return 0;
}

int RunEval(const EvalArgs& a, const Global& g) {
  auto opened = OpenIngested(a.store, a.vote);
  if (!opened.ok()) return Fail(opened.status());
  auto& store = opened->store;
  const CollectionInfo& info = opened->info;
  if (!a.queries.empty()) {
    if (!a.open_set.empty() || !a.patch_normal.empty()) {
      return Fail(Status::InvalidArgument(
          "--queries cannot be combined with --open-set or --patch-normal"));
    }
    EvalOptions opt;
    opt.label_field = !a.label.empty() ? a.label : info.label_field;
    opt.within_field = a.within;
    opt.group_field = a.group_by;
    opt.k = a.k;
    opt.vote = opened->vote;
    return RunQueryEval(a, g, *opened, opt);
  }
  auto table = store->LoadVectors(a.where);
  if (!table.ok()) return Fail(table.status());
  WarnDamaged(*table, *store);
  EvalOptions opt;
  opt.label_field = !a.label.empty() ? a.label : info.label_field;
  if (!a.open_set.empty()) return RunOpenSetEval(a, *table, opt.label_field, g);
  opt.within_field = a.within;
  opt.group_field = a.group_by;
  opt.k = a.k;
  opt.vote = opened->vote;
  ProgressBar bar("eval");
  bar.Update(0, table->size());
  auto rep = LeaveOneOut(*table, opt);
  bar.Finish();
  if (!rep.ok()) return Fail(rep.status());
  EvalOutcome o;
  o.protocol = a.group_by.empty() ? "leave-one-out" : "leave-one-group-out by " + a.group_by;
  o.rule = a.within.empty() ? "" : ", neighbours within the same " + a.within;
  o.label_field = opt.label_field;
  o.vote = opened->vote;
  o.table = &*table;
  o.report = std::move(*rep);
  if (!a.patch_normal.empty()) {
    // Patch-aware: the global k-NN figure of the same rows stays for comparison.
    auto patch = PatchEval(a, *table, opt, info, g);
    if (!patch.ok()) return Fail(patch.status());
    o.global = std::move(o.report);
    o.report = std::move(*patch);
    o.protocol += ", patch-aware (" + std::to_string(a.patch.votes) +
                  " most anomalous patches vote; normal class '" + a.patch_normal + "')";
  }
  if (!a.report.empty()) {
    Status st = WriteEvalReport(a, opt, o, *store, info);
    if (!st.ok()) return Fail(st);
  }
  if (g.json) {
    PrintEvalJson(a, o);
  } else {
    PrintEvalText(a, o);
  }
  return 0;
}

}  // namespace

void AddEvalCommand(CLI::App& app, const Global& g, Runner* run) {
  static EvalArgs ea;
  auto* eval = app.add_subcommand(
      "eval",
      "Leave-one-out evaluation: label every stored image by its nearest *other* images and "
      "compare. With --group-by, images sharing that field's value never vouch for each other.");
  eval->add_option("store", ea.store, kStoreHelp)->required();
  eval->add_option("--label", ea.label, "Field to predict (default: the store's label field)");
  eval->add_option("--within", ea.within, "Neighbours must share this field's value (e.g. part)");
  eval->add_option("--group-by", ea.group_by,
                   "Leave-one-group-out by this field (e.g. tile_group)");
  eval->add_option("-k,--k", ea.k, "Neighbours that vote")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  eval->add_option("--vote", ea.vote, "majority, distance or softmax")->capture_default_str();
  eval->add_option("--where", ea.where, "SQL condition selecting the rows evaluated");
  eval->add_option("--show", ea.show, "Mismatches to list (default all)");
  eval->add_option("--queries", ea.queries,
                   "Evaluate on a held-out labelled dataset instead of leave-one-out: its images "
                   "(any layout ingest reads) are embedded, not stored, and classified against "
                   "the store as `classify` would; --within then means the query's own value of "
                   "the field, --group-by excludes store rows sharing the query's value")
      ->type_name("DATASET");
  eval->add_option("--query-label", ea.query_label,
                   "With --queries: the queries' label field when it is named differently "
                   "(default: --label)");
  eval->add_option("--query-layout", ea.query_layout,
                   "With --queries: auto, aihub, folder or "
                   "manifest")
      ->capture_default_str();
  eval->add_flag("--exact", ea.exact, "With --queries: scan every row instead of the index");
  eval->add_option("--ef", ea.ef, "With --queries: HNSW candidate list (default 128)")
      ->check(CLI::Range(1, 100000));
  eval->add_option("--report", ea.report,
                   "Also write a self-contained HTML report: summary (plain vs group-aware), "
                   "per-class table, confusion matrix, distance histogram, every mistake beside "
                   "its nearest neighbour's thumbnail");
  eval->add_option("--patch-normal", ea.patch_normal,
                   "Patch-aware classification: NORMAL is the defect-free class; each row is "
                   "labelled by its most anomalous patches' nearest labelled patches (needs a "
                   "model card with a patch map). The global k-NN figure is printed beside it");
  eval->add_option("--patch-votes", ea.patch.votes, "Patch-aware: patches that vote per image")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  eval->add_option("--patch-coreset", ea.patch.coreset_fraction,
                   "Patch-aware: fraction of the normal rows' patches kept (greedy k-centre)")
      ->capture_default_str()
      ->check(CLI::Range(0.0001, 1.0));
  eval->add_option("--patch-dims", ea.patch.features.projected_dims,
                   "Patch-aware: random projection of patch vectors to this many dims (0: none)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65536));
  eval->add_option("--patch-pool", ea.patch.pool,
                   "Patch-aware: average the patch grid over POOL x POOL cells (fewer, coarser "
                   "patches)")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  eval->add_option("--open-set", ea.open_set,
                   "Open-set test: hold this class (or each class: all) out entirely and report "
                   "how many of its rows come back \"unknown\" and how many known rows are "
                   "wrongly rejected");
  eval->add_option("--reject-quantile", ea.reject_quantile,
                   "Rejection thresholds: this quantile of each class's leave-one-out nearest "
                   "distances of correct matches")
      ->capture_default_str()
      ->check(CLI::Range(0.5, 1.0));

  eval->callback([&g, run] { *run = [&g] { return RunEval(ea, g); }; });
}

}  // namespace nearlabel::cli
