#include "cli/batch.h"
#include "cli/cli.h"

namespace nearlabel::cli {
namespace {

// ---------------------------------------------------------------- classify / search
struct QueryArgs {
  std::string store, model, within, where, vote = "majority", label;
  BatchArgs batch;
  int k = 0;
  int ef = 0;
  bool exact = false;
  bool reject = false;
  double reject_quantile = 0.97;
  std::string confidence = "calibrated";
};

// Prints one answer as text (the JSON shape is AnswerJson's, shared with the server).
void PrintAnswer(const std::string& image, const Collection::Classified& c, bool classify,
                 const std::string& label_field, int k, Vote vote) {
  const std::string path = TerminalSafe(image);
  if (classify && c.unknown) {
    std::printf("%s: %s = unknown (%s)\n", path.c_str(), TerminalSafe(label_field).c_str(),
                TerminalSafe(c.rejected_why).c_str());
  } else if (classify) {
    const std::string& label = c.prediction.label;
    std::printf("%s: %s = %s (confidence %.3f%s, k=%d, %s vote)\n", path.c_str(),
                TerminalSafe(label_field).c_str(),
                label.empty() ? "(none)" : TerminalSafe(label).c_str(), c.prediction.confidence,
                c.calibrated ? " calibrated" : " vote share", k, VoteName(vote));
  } else {
    std::printf("%s: %zu nearest of %zu rows\n", path.c_str(), c.answer.neighbors.size(),
                c.answer.candidates);
  }
  std::vector<std::vector<std::string>> rows;
  for (size_t i = 0; i < c.answer.neighbors.size(); ++i) {
    const AnswerRow& r = c.answer.neighbors[i];
    rows.push_back({std::to_string(i + 1), std::to_string(r.id), FormatDouble(r.distance, 4),
                    c.labels[i], r.source});
  }
  PrintTable({"rank", "id", "distance", label_field, "source"}, rows);
}

// Open-set thresholds, calibrated on the rows this query may answer from (leave-one-out, one
// sgemm pass) and cached in the store until those rows or their labels change.
Result<RejectThresholds> QueryRejection(const QueryArgs& a, Store& store, const std::string& where,
                                        const std::string& label_field, const Global& g) {
  std::string how;
  NL_ASSIGN_OR_RETURN(RejectThresholds r,
                      CachedRejection(store, a.store, where, label_field, a.reject_quantile, &how));
  if (g.verbose) std::fprintf(stderr, "nearlabel: rejection thresholds %s\n", how.c_str());
  return r;
}

// Everything a query run answers with: the collection, the embedder, the options.
struct QuerySetup {
  Ingested opened;
  std::unique_ptr<Collection> collection;
  std::unique_ptr<Embedder> embedder;
  std::string label_field;
  QueryOptions q;
  std::optional<RejectThresholds> reject;
  std::optional<Calibration> calibration;
  AnswerJsonOptions jo;
};

// The calibration of the rows a classify may answer from, fitted by leave-one-out for its k
// and cached in the store; none (the vote's share, with a notice) when the rows cannot be
// calibrated (one class, one row).
Result<std::optional<Calibration>> QueryCalibration(const QueryArgs& a, Store& store,
                                                    const std::string& where,
                                                    const std::string& label_field, int k,
                                                    Vote vote, const Global& g) {
  if (a.confidence != "calibrated") return std::optional<Calibration>();
  std::string how;
  auto c = CachedCalibration(store, a.store, where, label_field, k, vote, &how);
  if (!c.ok() && c.status().code() == Status::Code::kInvalidArgument) {
    std::fprintf(stderr, "nearlabel: notice: confidence is the vote's share: %s\n",
                 c.status().message().c_str());
    return std::optional<Calibration>();
  }
  if (!c.ok()) return c.status();
  if (g.verbose) {
    std::fprintf(stderr, "nearlabel: confidence calibration %s (temperature %.3g, floor %.3g)\n",
                 how.c_str(), c->temperature, c->floor);
  }
  return std::optional<Calibration>(*c);
}

Result<QuerySetup> SetUpQuery(const QueryArgs& a, const Global& g, bool classify, size_t images) {
  QuerySetup s;
  NL_ASSIGN_OR_RETURN(s.opened, OpenIngested(a.store, a.vote));
  const CollectionInfo& info = s.opened.info;
  CollectionOptions copt;
  copt.use_index = !a.exact;
  // A few queries: read the nodes a walk visits rather than map the file (hnsw_index.cc).
  copt.index_access = images <= 64 ? HnswIndex::Access::kRead : HnswIndex::Access::kMapped;
  NL_ASSIGN_OR_RETURN(s.collection, Collection::Open(a.store, copt));
  const CollectionState cs = s.collection->state();
  if (!cs.notices.empty()) std::fprintf(stderr, "nearlabel: notice: %s", cs.notices.c_str());
  if (g.verbose && !cs.log.empty()) std::fprintf(stderr, "nearlabel: %s", cs.log.c_str());
  NL_ASSIGN_OR_RETURN(s.embedder, OpenEmbedderForStore(a.store, &info, a.model, g, images < 8));
  s.label_field = !a.label.empty()           ? a.label
                  : info.label_field.empty() ? "label"
                                             : info.label_field;
  s.q.k = a.k > 0 ? a.k : (classify ? 5 : 10);
  s.q.ef = a.ef;
  s.q.exact = a.exact;
  NL_ASSIGN_OR_RETURN(s.q.where_sql, RowFilterSql(a.within, a.where));
  if (classify && a.reject) {
    auto r = QueryRejection(a, *s.opened.store, s.q.where_sql, s.label_field, g);
    if (!r.ok()) return r.status().WithContext("--reject");
    s.reject = std::move(*r);
  }
  if (classify) {
    NL_ASSIGN_OR_RETURN(s.calibration, QueryCalibration(a, *s.opened.store, s.q.where_sql,
                                                        s.label_field, s.q.k, s.opened.vote, g));
  }
  s.jo.classify = classify;
  s.jo.label_field = s.label_field;
  s.jo.k = s.q.k;
  s.jo.vote = s.opened.vote;
  return s;
}

int RunQuery(const QueryArgs& a, const Global& g, bool classify) {
  const auto t_open = std::chrono::steady_clock::now();
  auto list = ListBatchImages(a.batch);
  if (!list.ok()) return Fail(list.status());
  auto setup = SetUpQuery(a, g, classify, list->paths.size());
  if (!setup.ok()) return Fail(setup.status());
  QuerySetup& s = *setup;
  auto writer = BatchWriter::Open(
      a.batch.out, a.store, classify ? BatchKind::kClassify : BatchKind::kSearch, s.q.k, g.json);
  if (!writer.ok()) return Fail(writer.status());
  const bool text = a.batch.out.empty() && !g.json;
  const auto t_query = std::chrono::steady_clock::now();
  auto answer = [&](EmbeddedFile& f) -> Result<json> {
    NL_ASSIGN_OR_RETURN(Collection::Classified c,
                        s.collection->Classify(f.embedding.data(), s.q, s.label_field,
                                               s.opened.vote, s.reject ? &*s.reject : nullptr,
                                               s.calibration ? &*s.calibration : nullptr));
    if (g.verbose) {
      std::fprintf(stderr, "%s: %s, ef %d, %zu distances\n", TerminalSafe(f.path).c_str(),
                   c.answer.plan.c_str(), c.answer.stats.ef_used, c.answer.stats.distances);
    }
    if (text) {
      PrintAnswer(f.path, c, classify, s.label_field, s.q.k, s.opened.vote);
      return json::object();
    }
    return AnswerJson(c, s.jo);
  };
  BatchSummary summary;
  const int rc =
      RunBatch(*list, *s.embedder, *writer, classify ? "classify" : "search", answer, &summary);
  if (g.verbose) {
    const CollectionState cs = s.collection->state();
    auto ms = [](auto from, auto to) {
      return std::chrono::duration<double, std::milli>(to - from).count();
    };
    std::fprintf(stderr,
                 "timing: store open and model load (%zu rows, segment %s, index %zu rows) %.1f "
                 "ms; answer (read, decode, embed, search, print) for %zu image(s) %.1f ms\n",
                 cs.rows, cs.segment.empty() ? "in memory" : cs.segment.c_str(), cs.index_rows,
                 ms(t_open, t_query), summary.answered,
                 ms(t_query, std::chrono::steady_clock::now()));
  }
  return rc;
}

}  // namespace

void AddQueryCommands(CLI::App& app, const Global& g, Runner* run) {
  static QueryArgs ca;
  auto* classify = app.add_subcommand("classify", "Label new images by their k nearest neighbours");
  classify->add_option("store", ca.store, kStoreHelp)->required();
  AddBatchOptions(classify, &ca.batch, "classified");
  classify->add_option("-k,--k", ca.k, "Neighbours that vote (default 5)")
      ->check(CLI::Range(1, 10000));
  classify->add_option("--vote", ca.vote, "majority, distance (1/d) or softmax (exp(sim/0.07))")
      ->capture_default_str();
  classify->add_option("--within", ca.within, "Only neighbours with FIELD=VALUE, e.g. part=exp1");
  classify->add_option(
      "--where", ca.where,
      "SQL condition on items, e.g. \"field(metadata,'part') IN ('exp1','exp2')\"");
  classify->add_option("--label", ca.label, "Field to predict (default: the store's label field)");
  classify->add_option("--model", ca.model, "Model (default: the store's)");
  classify->add_flag("--exact", ca.exact, "Scan every row instead of using the store's index");
  classify->add_flag("--reject", ca.reject,
                     "Open set: answer \"unknown\" when the nearest neighbour is farther than its "
                     "class's threshold (calibrated by leave-one-out over the store's rows)");
  classify
      ->add_option("--reject-quantile", ca.reject_quantile,
                   "Threshold = this quantile of the class's leave-one-out nearest distances of "
                   "correct matches: higher rejects fewer known images and catches fewer unknowns")
      ->capture_default_str()
      ->check(CLI::Range(0.5, 1.0));
  classify
      ->add_option("--confidence", ca.confidence,
                   "calibrated: the probability of the label from a softmax temperature fitted "
                   "by leave-one-out on the store (cached there, refitted when rows change); "
                   "vote: the winning label's share of the vote")
      ->capture_default_str()
      ->check(CLI::IsMember({"calibrated", "vote"}));
  classify
      ->add_option("--ef", ca.ef,
                   "HNSW candidate list (default 128): higher finds more true neighbours, slower")
      ->check(CLI::Range(1, 100000));

  static QueryArgs sa;
  auto* search = app.add_subcommand("search", "List the stored images nearest to an image");
  search->add_option("store", sa.store, kStoreHelp)->required();
  AddBatchOptions(search, &sa.batch, "searched");
  search->add_option("-k,--k", sa.k, "Neighbours to list (default 10)")
      ->check(CLI::Range(1, 100000));
  search->add_option("--within", sa.within, "Only rows with FIELD=VALUE");
  search->add_option("--where", sa.where, "SQL condition on items");
  search->add_option("--label", sa.label, "Field shown as the label");
  search->add_option("--model", sa.model, "Model (default: the store's)");
  search->add_flag("--exact", sa.exact, "Scan every row instead of using the store's index");
  search
      ->add_option("--ef", sa.ef,
                   "HNSW candidate list (default 128): higher finds more true neighbours, slower")
      ->check(CLI::Range(1, 100000));

  classify->callback([&g, run] { *run = [&g] { return RunQuery(ca, g, true); }; });
  search->callback([&g, run] { *run = [&g] { return RunQuery(sa, g, false); }; });
}

}  // namespace nearlabel::cli
