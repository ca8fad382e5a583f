#include "cli/batch.h"
#include "cli/cli.h"

namespace nearlabel::cli {
namespace {

// ---------------------------------------------------------------- anomaly
struct AnomalyArgs {
  std::string store, name = "default", normal, anomalous, heatmap_dir, report;
  std::string bank_search = "auto";
  BatchArgs batch;  // anomaly score
  AnomalyFitOptions fit;
};

std::string BankSearchName(const AnomalyModel& m) {
  return m.bank_index ? "hnsw graph (ef " + std::to_string(m.bank_index_ef) + ")" : "exact scan";
}

int RunAnomalyFit(const AnomalyArgs& a, const Global& g) {
  auto opened = OpenIngested(a.store, "majority", Store::Mode::kReadWrite);
  if (!opened.ok()) return Fail(opened.status());
  Store& store = *opened->store;
  std::string sha;
  auto embedder = OpenPatchEmbedder(a.store, opened->info, g, false, &sha);
  if (!embedder.ok()) return Fail(embedder.status());
  AnomalyFitOptions opt = a.fit;
  opt.name = a.name;
  opt.bank_index = a.bank_search == "hnsw"    ? AnomalyFitOptions::BankIndex::kHnsw
                   : a.bank_search == "exact" ? AnomalyFitOptions::BankIndex::kExact
                                              : AnomalyFitOptions::BankIndex::kAuto;
  opt.normal_where = a.normal;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> warnings;
  auto model = FitAnomalyModel(store, **embedder, sha, opt, &warnings);
  if (!model.ok()) return Fail(model.status());
  for (const auto& w : warnings)
    std::fprintf(stderr, "nearlabel: warning: skipped %s\n", TerminalSafe(w).c_str());
  auto serialized = model->Serialize();
  if (!serialized.ok()) return Fail(serialized.status());
  const std::string& bytes = *serialized;
  Status st = store.PutBlob(AnomalyModelKey(a.name), bytes);
  if (!st.ok()) return Fail(st);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto& m = *model;
  if (g.json) {
    PrintJson({{"name", m.name},
               {"normal", m.normal_where},
               {"bank_images", m.bank_items.size()},
               {"calibration_images", m.calibration_items.size()},
               {"test_images", m.test_items.size()},
               {"patches", m.patches_before_coreset},
               {"bank_patches", m.bank_rows()},
               {"patch_dims", m.projector.dims()},
               {"bank_bytes", bytes.size()},
               {"bank_search", BankSearchName(m)},
               {"threshold", m.threshold},
               {"false_alarm_rate", m.false_alarm_rate},
               {"skipped", warnings.size()},
               {"seconds", secs}});
    return 0;
  }
  std::printf(
      "anomaly model '%s' fitted on %zu normal images (%s) in %.1f s\n"
      "  bank        %zu of %zu patches (greedy coreset), %d-d from a %dx%d map of %d-d, %.1f MB\n"
      "  search      %s\n"
      "  threshold   %.4f: %.1f%% of %zu held-out normal images score above it\n"
      "  kept out    %zu more normal images for `nearlabel anomaly eval`\n",
      m.name.c_str(), m.bank_items.size(), m.normal_where.c_str(), secs, m.bank_rows(),
      m.patches_before_coreset, m.projector.dims(), m.projector.grid(), m.projector.grid(),
      m.projector.raw_dims(), bytes.size() / 1e6, BankSearchName(m).c_str(), m.threshold,
      100 * m.false_alarm_rate, m.calibration_items.size(), m.test_items.size());
  if (!warnings.empty()) {
    std::printf("  skipped     %zu unreadable images (listed above)\n", warnings.size());
  }
  return 0;
}

// A row scored by an anomaly model.
struct ScoredRow {
  int64_t id = 0;
  std::string source;
  AnomalyScore score;
};

// Scores the rows matching `where` (their image files) with `model`, reading the patch maps a
// few dozen at a time (one map is grid x grid x raw dims floats: 0.6 MB for the default
// model). Keeps the patch scores only with `keep_patches` (for heat maps).
Result<std::vector<ScoredRow>> ScoreRows(Store& store, const AnomalyModel& model,
                                         Embedder& embedder, const std::string& where,
                                         bool keep_patches, size_t* unreadable) {
  NL_ASSIGN_OR_RETURN(VectorTable rows, store.LoadVectors(where));
  std::vector<ScoredRow> out;
  constexpr size_t kChunk = 64;
  for (size_t at = 0; at < rows.size(); at += kChunk) {
    const size_t end = std::min(rows.size(), at + kChunk);
    const std::vector<std::string> paths(rows.sources.begin() + static_cast<ptrdiff_t>(at),
                                         rows.sources.begin() + static_cast<ptrdiff_t>(end));
    const std::vector<PatchMap> maps = ReadPatchMaps(paths, embedder);
    for (size_t i = 0; i < maps.size(); ++i) {
      if (!maps[i].status.ok()) {
        ++*unreadable;
        continue;
      }
      ScoredRow r{rows.ids[at + i], maps[i].path, ScoreImage(model, maps[i].raw.data())};
      if (!keep_patches) r.score.patch_scores.clear();
      out.push_back(std::move(r));
    }
  }
  return out;
}

std::vector<float> ScoresOf(const std::vector<ScoredRow>& rows) {
  std::vector<float> v;
  for (const ScoredRow& r : rows) v.push_back(r.score.score);
  return v;
}

std::string IdList(const std::vector<int64_t>& ids) {
  std::string s;
  for (int64_t id : ids) s += (s.empty() ? "" : ",") + std::to_string(id);
  return "id IN (" + s + ")";
}

// The heat maps of up to `cap` of `rows` for the report, in the order given.
std::vector<AnomalyReportImage> ReportImages(const std::vector<const ScoredRow*>& rows, size_t cap,
                                             const AnomalyModel& model,
                                             const PreprocessSpec& spec) {
  std::vector<AnomalyReportImage> out;
  for (size_t i = 0; i < rows.size() && i < cap; ++i) {
    const ScoredRow& r = *rows[i];
    AnomalyReportImage im{r.id, r.source, r.score.score, ""};
    auto bytes = ReadFileToString(r.source);
    auto img = bytes.ok() ? DecodeImage(*bytes) : Result<cv::Mat>(bytes.status());
    if (img.ok()) {
      std::vector<uchar> jpeg;
      cv::imencode(".jpg", AnomalyHeatmap(*img, spec, model, r.score.patch_scores), jpeg,
                   {cv::IMWRITE_JPEG_QUALITY, 85});
      im.heatmap_jpeg.assign(jpeg.begin(), jpeg.end());
    }
    out.push_back(std::move(im));
  }
  return out;
}

// Share of `v` above `t`.
double RateAbove(const std::vector<float>& v, float t) {
  return v.empty() ? 0.0
                   : static_cast<double>(
                         std::count_if(v.begin(), v.end(), [&](float s) { return s > t; })) /
                         static_cast<double>(v.size());
}

// What `anomaly eval` measured, for the report and the renderers.
struct AnomalyEvalOutcome {
  std::string anomalous;  // the SQL condition of the anomalous rows
  std::vector<ScoredRow> normal_rows, bad_rows;
  std::vector<float> normal, bad;  // their scores
  double auroc = 0;
  std::vector<std::pair<std::string, float>> thresholds;  // (what, threshold)
  size_t unreadable = 0;
};

// The calibrated threshold, then those that give 1%, 5%, 10% false alarms on the calibration
// images, then those that catch 90%, 95%, 99% of the anomalies.
std::vector<std::pair<std::string, float>> EvalThresholds(const AnomalyModel& m,
                                                          const std::vector<float>& bad) {
  std::vector<std::pair<std::string, float>> t{{"calibrated", m.threshold}};
  for (double r : {0.01, 0.05, 0.10}) {
    t.push_back({"cal. " + FormatDouble(100 * r, 0) + "% false alarms",
                 ThresholdForFalseAlarms(m.calibration_scores, r)});
  }
  for (double r : {0.90, 0.95, 0.99}) {
    t.push_back(
        {"catch " + FormatDouble(100 * r, 0) + "% (hindsight)", ThresholdForFalseAlarms(bad, r)});
  }
  return t;
}

Status WriteAnomalyReport(const AnomalyArgs& a, const AnomalyModel& model, const Embedder& embedder,
                          const AnomalyEvalOutcome& o) {
  AnomalyReportPage page;
  page.store = MaskedLocation(a.store);
  page.name = a.name;
  page.model = model.model;
  page.normal = model.normal_where;
  page.anomalous = o.anomalous;
  page.auroc = o.auroc;
  page.threshold = model.threshold;
  page.false_alarm_rate = model.false_alarm_rate;
  page.normal_scores = o.normal;
  page.anomalous_scores = o.bad;
  for (const auto& [what, t] : o.thresholds) {
    page.thresholds.push_back({what, t, RateAbove(o.normal, t), 1 - RateAbove(o.bad, t)});
  }
  // Misses lowest score first (the least visible), alarms and catches highest first.
  std::vector<const ScoredRow*> missed, alarms, caught;
  for (const ScoredRow& r : o.bad_rows) {
    (r.score.score > model.threshold ? caught : missed).push_back(&r);
  }
  for (const ScoredRow& r : o.normal_rows) {
    if (r.score.score > model.threshold) alarms.push_back(&r);
  }
  auto by_score = [](bool ascending) {
    return [ascending](const ScoredRow* x, const ScoredRow* y) {
      return ascending ? x->score.score < y->score.score : x->score.score > y->score.score;
    };
  };
  std::sort(missed.begin(), missed.end(), by_score(true));
  std::sort(alarms.begin(), alarms.end(), by_score(false));
  std::sort(caught.begin(), caught.end(), by_score(false));
  const PreprocessSpec& spec = embedder.card().preprocess;
  page.missed = ReportImages(missed, 24, model, spec);
  page.false_alarms = ReportImages(alarms, 24, model, spec);
  page.caught = ReportImages(caught, 12, model, spec);
  page.missed_total = missed.size();
  page.false_alarms_total = alarms.size();
  page.caught_total = caught.size();
  return WriteFileAtomically(a.report, RenderAnomalyReport(page));
}

void PrintAnomalyEval(const AnomalyArgs& a, const AnomalyModel& model, const AnomalyEvalOutcome& o,
                      bool as_json) {
  if (as_json) {
    json j = {{"name", a.name},
              {"normal", model.normal_where},
              {"anomalous", o.anomalous},
              {"normal_images", o.normal.size()},
              {"anomalous_images", o.bad.size()},
              {"unreadable", o.unreadable},
              {"auroc", o.auroc},
              {"thresholds", json::array()}};
    for (const auto& [what, t] : o.thresholds) {
      j["thresholds"].push_back({{"what", what},
                                 {"threshold", t},
                                 {"false_alarm_rate", RateAbove(o.normal, t)},
                                 {"miss_rate", 1 - RateAbove(o.bad, t)}});
    }
    if (!a.report.empty()) j["report"] = a.report;
    PrintJson(j);
    return;
  }
  std::printf(
      "anomaly model '%s': %zu held-out normal images (never in the bank) vs %zu "
      "anomalous (%s)\n",
      a.name.c_str(), o.normal.size(), o.bad.size(), o.anomalous.c_str());
  std::printf("image AUROC = %.4f\n\n", o.auroc);
  std::vector<std::vector<std::string>> rows;
  for (const auto& [what, t] : o.thresholds) {
    rows.push_back({what, FormatDouble(t, 4), FormatDouble(100 * RateAbove(o.normal, t), 1) + "%",
                    FormatDouble(100 * (1 - RateAbove(o.bad, t)), 1) + "%"});
  }
  PrintTable({"threshold", "score", "false alarms", "misses"}, rows);
  if (o.unreadable) std::printf("\n%zu rows skipped: image file unreadable\n", o.unreadable);
  if (!a.report.empty()) std::printf("\nreport: %s\n", a.report.c_str());
}

int RunAnomalyEval(const AnomalyArgs& a, const Global& g) {
  auto opened = OpenIngested(a.store, "majority");
  if (!opened.ok()) return Fail(opened.status());
  auto& store = *opened->store;
  auto model = LoadAnomalyModel(store, a.name, opened->info);
  if (!model.ok()) return Fail(model.status());
  std::string sha;
  auto embedder = OpenPatchEmbedder(a.store, opened->info, g, false, &sha);
  if (!embedder.ok()) return Fail(embedder.status());
  if (model->test_items.empty()) {
    return Fail(Status::InvalidArgument("anomaly model '" + a.name + "' kept no test images"));
  }
  AnomalyEvalOutcome o;
  o.anomalous = a.anomalous.empty() ? "NOT (" + model->normal_where + ")" : a.anomalous;
  const bool report = !a.report.empty();
  auto normal_rows =
      ScoreRows(store, *model, **embedder, IdList(model->test_items), report, &o.unreadable);
  if (!normal_rows.ok()) return Fail(normal_rows.status());
  auto bad_rows = ScoreRows(store, *model, **embedder, o.anomalous, report, &o.unreadable);
  if (!bad_rows.ok()) return Fail(bad_rows.status());
  if (bad_rows->empty()) {
    return Fail(Status::InvalidArgument("no readable anomalous rows match: " + o.anomalous));
  }
  o.normal_rows = std::move(*normal_rows);
  o.bad_rows = std::move(*bad_rows);
  o.normal = ScoresOf(o.normal_rows);
  o.bad = ScoresOf(o.bad_rows);
  o.auroc = Auroc(o.normal, o.bad);
  o.thresholds = EvalThresholds(*model, o.bad);
  if (report) {
    Status st = WriteAnomalyReport(a, *model, **embedder, o);
    if (!st.ok()) return Fail(st);
  }
  PrintAnomalyEval(a, *model, o, g.json);
  return 0;
}

// Writes the heat map of image number `n` (`f`, scored `s`) into `dir`; returns its path.
Result<std::string> WriteHeatmap(const std::string& dir, size_t n, const std::string& path,
                                 const PreprocessSpec& spec, const AnomalyModel& model,
                                 const AnomalyScore& s) {
  NL_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path));
  NL_ASSIGN_OR_RETURN(cv::Mat img, DecodeImage(bytes));
  const cv::Mat overlay = AnomalyHeatmap(img, spec, model, s.patch_scores);
  const std::string heatmap =
      (std::filesystem::path(dir) /
       (std::to_string(n) + "-" + std::filesystem::path(path).stem().string() + ".heatmap.png"))
          .string();
  std::vector<uchar> png;
  cv::imencode(".png", overlay, png);
  NL_RETURN_IF_ERROR(WriteFileAtomically(heatmap, std::string(png.begin(), png.end())));
  return heatmap;
}

int RunAnomalyScore(const AnomalyArgs& a, const Global& g) {
  auto list = ListBatchImages(a.batch);
  if (!list.ok()) return Fail(list.status());
  auto opened = OpenIngested(a.store, "majority");
  if (!opened.ok()) return Fail(opened.status());
  auto model = LoadAnomalyModel(*opened->store, a.name, opened->info);
  if (!model.ok()) return Fail(model.status());
  std::string sha;
  auto embedder = OpenPatchEmbedder(a.store, opened->info, g, list->paths.size() < 8, &sha);
  if (!embedder.ok()) return Fail(embedder.status());
  if (!a.heatmap_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(a.heatmap_dir, ec);
    if (ec) return Fail(Status::IOError("cannot create " + a.heatmap_dir + ": " + ec.message()));
  }
  auto writer = BatchWriter::Open(a.batch.out, a.store, BatchKind::kAnomaly, 0, g.json);
  if (!writer.ok()) return Fail(writer.status());
  const bool text = a.batch.out.empty() && !g.json;
  if (text) {
    std::printf(
        "anomaly model '%s', threshold %.4f (%.1f%% false alarms on held-out normal "
        "images)\n",
        a.name.c_str(), model->threshold, 100 * model->false_alarm_rate);
  }
  const PreprocessSpec& spec = (*embedder)->card().preprocess;
  size_t n = 0;
  std::vector<std::vector<std::string>> rows;  // text: printed as one table per batch of 32
  auto answer = [&](EmbeddedFile& f) -> Result<json> {
    const AnomalyScore s = ScoreImage(*model, f.embedding.data());
    const bool anomalous = s.score > model->threshold;
    json r = {{"score", s.score},
              {"threshold", model->threshold},
              {"verdict", anomalous ? "anomalous" : "normal"},
              {"grid", model->projector.grid()},
              {"patch_scores", s.patch_scores}};
    std::string heatmap = "-";
    ++n;
    if (!a.heatmap_dir.empty()) {
      NL_ASSIGN_OR_RETURN(heatmap, WriteHeatmap(a.heatmap_dir, n, f.path, spec, *model, s));
      r["heatmap"] = heatmap;
    }
    if (text) {
      rows.push_back(
          {f.path, FormatDouble(s.score, 4), anomalous ? "ANOMALOUS" : "normal", heatmap});
      if (rows.size() == 32) {
        PrintTable({"image", "score", "verdict", "heat map"}, rows);
        rows.clear();
      }
    }
    return r;
  };
  BatchSummary summary;
  const int rc = RunBatch(*list, **embedder, *writer, "score", answer, &summary);
  if (!rows.empty()) PrintTable({"image", "score", "verdict", "heat map"}, rows);
  return rc;
}

}  // namespace

void AddAnomalyCommands(CLI::App& app, const Global& g, Runner* run) {
  static AnomalyArgs aa;
  auto* anomaly = app.add_subcommand(
      "anomaly",
      "Anomaly detection from patch neighbours (PatchCore): fit a bank of normal patches, score "
      "images by their worst patch, evaluate. Needs a model card with a \"patch\" map.");
  anomaly->require_subcommand(1);
  auto* anomaly_fit = anomaly->add_subcommand(
      "fit",
      "Build the bank from normal rows (re-reads their image files) and calibrate the "
      "threshold on held-out normal rows");
  anomaly_fit->add_option("store", aa.store, kStoreHelp)->required();
  anomaly_fit
      ->add_option("--normal", aa.normal,
                   "SQL condition selecting the normal rows, e.g. "
                   "\"field(metadata,'label')='ok_front'\"")
      ->required();
  anomaly_fit->add_option("--name", aa.name, "Name of the anomaly model")->capture_default_str();
  anomaly_fit
      ->add_option("--coreset", aa.fit.coreset_fraction,
                   "Fraction of the bank images' patches kept (greedy k-centre)")
      ->capture_default_str();
  anomaly_fit
      ->add_option("--coreset-max", aa.fit.coreset_max, "At most this many patches (0: no cap)")
      ->capture_default_str();
  anomaly_fit
      ->add_option("--holdout", aa.fit.holdout,
                   "Fraction of normal rows kept out of the bank: half calibrate the "
                   "threshold, half are left for `anomaly eval`")
      ->capture_default_str();
  anomaly_fit
      ->add_option("--false-alarms", aa.fit.false_alarm_rate,
                   "Share of held-out normal images allowed above the threshold")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  anomaly_fit
      ->add_option("--patch-dims", aa.fit.features.projected_dims,
                   "Random projection of patch vectors to this many dims (0: none)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65536));
  anomaly_fit->add_option("--seed", aa.fit.seed, "Seed of the split, projection and coreset")
      ->capture_default_str();
  anomaly_fit
      ->add_option(
          "--bank-search", aa.bank_search,
          "Nearest-patch search: hnsw (a graph stored with the model), exact (a scan), "
          "or auto: hnsw for banks of 30000 patches or more, where the graph measured 3x to "
          "20x faster on an idle machine (bench/patch_bank_search)")
      ->check(CLI::IsMember({"auto", "hnsw", "exact"}))
      ->capture_default_str();
  auto* anomaly_score = anomaly->add_subcommand(
      "score",
      "Score images: the worst patch's distance to the nearest normal patch, and a "
      "verdict against the calibrated threshold");
  anomaly_score->add_option("store", aa.store, kStoreHelp)->required();
  AddBatchOptions(anomaly_score, &aa.batch, "scored");
  anomaly_score->add_option("--name", aa.name, "Anomaly model")->capture_default_str();
  anomaly_score->add_option("--heatmap", aa.heatmap_dir,
                            "Write a PNG heat map of patch scores over each image to this folder");
  auto* anomaly_eval = anomaly->add_subcommand(
      "eval",
      "Image AUROC and false-alarm / miss rates per threshold, on the held-out normal "
      "rows and the anomalous rows");
  anomaly_eval->add_option("store", aa.store, kStoreHelp)->required();
  anomaly_eval->add_option("--name", aa.name, "Anomaly model")->capture_default_str();
  anomaly_eval->add_option("--anomalous", aa.anomalous,
                           "SQL condition selecting the anomalous rows (default: NOT the "
                           "model's --normal condition)");
  anomaly_eval->add_option("--report", aa.report,
                           "Also write a self-contained HTML report: AUROC, thresholds, score "
                           "histogram, heat maps of the missed anomalies, the false alarms and "
                           "the clearest catches");

  anomaly_fit->callback([&g, run] { *run = [&g] { return RunAnomalyFit(aa, g); }; });
  anomaly_score->callback([&g, run] { *run = [&g] { return RunAnomalyScore(aa, g); }; });
  anomaly_eval->callback([&g, run] { *run = [&g] { return RunAnomalyEval(aa, g); }; });
}

}  // namespace nearlabel::cli
