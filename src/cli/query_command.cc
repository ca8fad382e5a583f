#include "cli/cli.h"

namespace nearlabel::cli {
namespace {

// ---------------------------------------------------------------- classify / search
struct QueryArgs {
  std::string store, model, within, where, vote = "majority", label;
  std::vector<std::string> images;
  int k = 0;
  int ef = 0;
  bool exact = false;
  bool reject = false;
  double reject_quantile = 0.97;
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
    std::printf("%s: %s = %s (confidence %.3f, k=%d, %s vote)\n", path.c_str(),
                TerminalSafe(label_field).c_str(),
                label.empty() ? "(none)" : TerminalSafe(label).c_str(), c.prediction.confidence, k,
                VoteName(vote));
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

int RunQuery(const QueryArgs& a, const Global& g, bool classify) {
  const auto t_open = std::chrono::steady_clock::now();
  auto opened = OpenIngested(a.store, a.vote);
  if (!opened.ok()) return Fail(opened.status());
  const CollectionInfo& info = opened->info;
  const Vote vote = opened->vote;
  std::string within_sql;
  if (!a.within.empty()) {
    auto w = WithinToSql(a.within);
    if (!w.ok()) return Fail(w.status());
    within_sql = *w;
  }
  CollectionOptions copt;
  copt.use_index = !a.exact;
  // A few queries: read the nodes a walk visits rather than map the file (hnsw_index.cc).
  copt.index_access = a.images.size() <= 64 ? HnswIndex::Access::kRead : HnswIndex::Access::kMapped;
  auto collection = Collection::Open(a.store, copt);
  if (!collection.ok()) return Fail(collection.status());
  const CollectionState cs = (*collection)->state();
  if (!cs.notices.empty()) std::fprintf(stderr, "nearlabel: notice: %s", cs.notices.c_str());
  if (g.verbose && !cs.log.empty()) std::fprintf(stderr, "nearlabel: %s", cs.log.c_str());
  const auto t_model = std::chrono::steady_clock::now();
  auto embedder = OpenEmbedderForStore(a.store, &info, a.model, g, a.images.size() < 8);
  if (!embedder.ok()) return Fail(embedder.status());
  const std::string label_field = !a.label.empty()           ? a.label
                                  : info.label_field.empty() ? "label"
                                                             : info.label_field;
  QueryOptions q;
  q.k = a.k > 0 ? a.k : (classify ? 5 : 10);
  q.ef = a.ef;
  q.exact = a.exact;
  q.where_sql = JoinWhere({within_sql, a.where});
  std::optional<RejectThresholds> reject;
  if (classify && a.reject) {
    auto r = QueryRejection(a, *opened->store, q.where_sql, label_field, g);
    if (!r.ok()) return Fail(r.status().WithContext("--reject"));
    reject = std::move(*r);
  }
  AnswerJsonOptions jo;
  jo.classify = classify;
  jo.label_field = label_field;
  jo.k = q.k;
  jo.vote = vote;

  const auto t_query = std::chrono::steady_clock::now();
  auto files = EmbedFiles(a.images, **embedder);
  int failures = 0;
  json out = json::array();
  for (const auto& f : files) {
    if (!f.status.ok()) {
      std::fprintf(stderr, "nearlabel: error: %s: %s\n", TerminalSafe(f.path).c_str(),
                   TerminalSafe(f.status.message()).c_str());
      ++failures;
      continue;
    }
    auto c = (*collection)
                 ->Classify(f.embedding.data(), q, label_field, vote, reject ? &*reject : nullptr);
    if (!c.ok()) return Fail(c.status());
    if (g.verbose) {
      std::fprintf(stderr, "%s: %s, ef %d, %zu distances\n", TerminalSafe(f.path).c_str(),
                   c->answer.plan.c_str(), c->answer.stats.ef_used, c->answer.stats.distances);
    }
    if (g.json) {
      json r = AnswerJson(*c, jo);
      r["image"] = f.path;
      out.push_back(std::move(r));
    } else {
      PrintAnswer(f.path, *c, classify, label_field, q.k, vote);
    }
  }
  if (g.json) PrintJson(out);
  if (g.verbose) {
    auto ms = [](auto from, auto to) {
      return std::chrono::duration<double, std::milli>(to - from).count();
    };
    const auto now = std::chrono::steady_clock::now();
    std::fprintf(stderr,
                 "timing: store open (%zu rows, segment %s, index %zu rows) %.1f ms; model loaded "
                 "%.1f ms; answer (read, decode, embed, search, print) for %zu image(s) %.1f ms\n",
                 cs.rows, cs.segment.empty() ? "in memory" : cs.segment.c_str(), cs.index_rows,
                 ms(t_open, t_model), ms(t_model, t_query), a.images.size(), ms(t_query, now));
  }
  return failures ? 1 : 0;
}

}  // namespace

void AddQueryCommands(CLI::App& app, const Global& g, Runner* run) {
  static QueryArgs ca;
  auto* classify = app.add_subcommand("classify", "Label new images by their k nearest neighbours");
  classify->add_option("store", ca.store, kStoreHelp)->required();
  classify->add_option("images", ca.images, "Image files")->required();
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
      ->add_option("--ef", ca.ef,
                   "HNSW candidate list (default 128): higher finds more true neighbours, slower")
      ->check(CLI::Range(1, 100000));

  static QueryArgs sa;
  auto* search = app.add_subcommand("search", "List the stored images nearest to an image");
  search->add_option("store", sa.store, kStoreHelp)->required();
  search->add_option("images", sa.images, "Image files")->required();
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
