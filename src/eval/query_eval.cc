#include "nearlabel/query_eval.h"

#include <unordered_map>

#include "common/json.h"

namespace nearlabel {
namespace {

// The where clause for one query: --where, the query's --within value, and never its group.
Result<std::string> QueryWhere(const QueryEvalOptions& o, const nlohmann::json& meta,
                               bool* no_candidate) {
  std::string within;
  if (!o.eval.within_field.empty()) {
    const std::string value = MetadataField(meta, o.eval.within_field);
    if (value.empty()) *no_candidate = true;  // no value to stay within
    within = o.eval.within_field + "=" + value;
  }
  NL_ASSIGN_OR_RETURN(std::string where, RowFilterSql(within, o.where_sql));
  if (!o.eval.group_field.empty()) {
    const std::string value = MetadataField(meta, o.eval.group_field);
    if (!value.empty()) {
      NL_ASSIGN_OR_RETURN(std::string same, WithinToSql(o.eval.group_field + "=" + value));
      where += (where.empty() ? "" : " AND ") + ("NOT (" + same + ")");
    }
  }
  return where;
}

}  // namespace

Result<QueryEvalResult> EvaluateQueries(const Collection& collection, Embedder& embedder,
                                        const DatasetListing& queries,
                                        const QueryEvalOptions& options, const ProgressFn& progress,
                                        const std::atomic<bool>* stop) {
  if (options.eval.label_field.empty()) return Status::InvalidArgument("--label is required");
  if (options.eval.k < 1) return Status::InvalidArgument("k must be >= 1");
  const std::string& truth_field =
      options.query_label.empty() ? options.eval.label_field : options.query_label;
  QueryEvalResult out;
  out.problems = queries.problems;
  std::vector<std::string> paths;
  for (const DatasetItem& item : queries.items) paths.push_back(item.image_path);

  std::vector<std::string> truth, predicted;
  std::vector<Neighbor> evidence;
  std::unordered_map<int64_t, size_t> shown_row;  // store id -> row of out.shown
  std::vector<AnswerRow> nearest;                 // per query: its nearest store row
  size_t next = 0;
  auto sink = [&](EmbeddedFile& f) -> Status {
    const DatasetItem& item = queries.items[next++];
    if (progress) progress(next, paths.size());
    if (!f.status.ok()) {
      out.problems.push_back({f.path, f.status.message()});
      return Status::OK();
    }
    bool no_candidate = false;
    NL_ASSIGN_OR_RETURN(std::string where, QueryWhere(options, item.metadata, &no_candidate));
    QueryOptions q;
    q.k = options.eval.k;
    q.ef = options.ef;
    q.exact = options.exact;
    q.where_sql = where;
    std::string label;
    AnswerRow first;
    if (!no_candidate) {
      NL_ASSIGN_OR_RETURN(Collection::Classified c,
                          collection.Classify(f.embedding.data(), q, options.eval.label_field,
                                              options.eval.vote, nullptr));
      label = c.prediction.label;
      if (!c.answer.neighbors.empty()) first = c.answer.neighbors.front();
    }
    const int64_t query_id = -static_cast<int64_t>(out.shown.size() + 1);
    out.shown.ids.push_back(query_id);
    out.shown.sources.push_back(item.image_path);
    out.shown.metadata.push_back(
        item.metadata.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    truth.push_back(MetadataField(item.metadata, truth_field));
    predicted.push_back(label);
    nearest.push_back(std::move(first));
    return Status::OK();
  };
  NL_ASSIGN_OR_RETURN(EmbedStreamReport streamed, EmbedFilesStreaming(paths, embedder, sink, stop));
  out.interrupted = streamed.interrupted;
  out.queries = out.shown.size();
  // Evidence rows: the nearest store row of each query, appended once per id.
  for (size_t i = 0; i < out.queries; ++i) {
    const AnswerRow& nb = nearest[i];
    if (predicted[i].empty()) {  // no store row answered: nothing to show
      evidence.push_back({0, 0});
      continue;
    }
    auto [it, fresh] = shown_row.emplace(nb.id, out.shown.size());
    if (fresh) {
      out.shown.ids.push_back(nb.id);
      out.shown.sources.push_back(nb.source);
      out.shown.metadata.push_back(nb.metadata);
    }
    evidence.push_back({it->second, nb.distance});
  }
  out.report = ReportFromPredictions(options.eval, truth, predicted, evidence);
  for (size_t i = 0; i < out.queries; ++i) {
    if (truth[i].empty() || predicted[i].empty()) continue;
    (truth[i] == predicted[i] ? out.report.nearest_distance_correct
                              : out.report.nearest_distance_wrong)
        .push_back(evidence[i].distance);
  }
  return out;
}

}  // namespace nearlabel
