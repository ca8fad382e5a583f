#include "cli/cli.h"

namespace nearlabel::cli {
namespace {

// ---------------------------------------------------------------- sql
json CellJson(const SqlValue& v) {
  if (std::holds_alternative<std::monostate>(v)) return nullptr;
  if (auto* i = std::get_if<int64_t>(&v)) return *i;
  if (auto* d = std::get_if<double>(&v)) return *d;
  if (auto* s = std::get_if<std::string>(&v)) return *s;
  const auto& b = std::get<std::vector<uint8_t>>(v);
  if (b.size() % 4 == 0 && !b.empty()) {  // present float32 blobs as vectors
    return json::parse(FormatVector(reinterpret_cast<const float*>(b.data()), b.size() / 4),
                       nullptr, false);
  }
  return "<blob " + std::to_string(b.size()) + " bytes>";
}

int RunSql(const std::string& store_path, std::string query, bool write, const Global& g) {
  if (query.empty()) {
    query.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  auto store = OpenStore(store_path, write ? Store::Mode::kReadWrite : Store::Mode::kReadOnly);
  if (!store.ok()) return Fail(store.status());
  auto results = (*store)->Execute(query);
  if (!results.ok()) return Fail(results.status().WithContext("SQL"));
  json all = json::array();
  for (const auto& r : *results) {
    if (g.json) {
      json rows = json::array();
      for (const auto& row : r.rows) {
        json o = json::object();
        for (size_t c = 0; c < row.size(); ++c) o[r.columns[c]] = CellJson(row[c]);
        rows.push_back(o);
      }
      all.push_back(r.columns.empty() ? json{{"changes", r.changes}} : rows);
      continue;
    }
    if (r.columns.empty()) {
      if (r.changes) std::printf("%lld rows changed\n", static_cast<long long>(r.changes));
      continue;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& row : r.rows) {
      std::vector<std::string> cells;
      for (const auto& v : row) cells.push_back(SqlValueText(v));
      rows.push_back(cells);
    }
    PrintTable(r.columns, rows);
  }
  if (g.json) PrintJson(all.size() == 1 ? all[0] : all);
  return 0;
}

// ---------------------------------------------------------------- check
int RunCheck(const std::string& path, const Global& g) {
  auto store = OpenStore(path, Store::Mode::kReadOnly);
  if (!store.ok()) return Fail(store.status());
  auto report = CheckStore(**store);
  if (!report.ok()) return Fail(report.status());
  if (g.json) {
    json items = json::array();
    for (const CheckItem& c : report->items) {
      items.push_back({{"check", c.what}, {"ok", c.ok}, {"detail", c.detail}, {"fix", c.fix}});
    }
    PrintJson({{"store", MaskedLocation(path)}, {"ok", report->ok()}, {"checks", items}});
  } else {
    for (const CheckItem& c : report->items) {
      std::printf("%-4s %-15s %s\n", c.ok ? "ok" : "BAD", c.what.c_str(),
                  TerminalSafe(c.detail).c_str());
      if (!c.ok) std::printf("     %-15s what to do: %s\n", "", TerminalSafe(c.fix).c_str());
    }
    std::printf("%s: %s\n", MaskedLocation(path).c_str(),
                report->ok() ? "every check passed" : "problems found (see above)");
  }
  return report->ok() ? 0 : 1;
}

// ---------------------------------------------------------------- info / models
int RunInfo(const std::string& path, const Global& g) {
  auto store = OpenStore(path, Store::Mode::kReadOnly);
  if (!store.ok()) return Fail(store.status());
  auto info = (*store)->GetCollection();
  if (!info.ok()) return Fail(info.status());
  auto count = (*store)->Count();
  if (!count.ok()) return Fail(count.status());
  json j = {{"store", MaskedLocation(path)}, {"rows", *count}};
  std::map<std::string, int64_t> label_counts;
  if (*info) {
    j["model"] = (*info)->model;
    j["model_sha256"] = (*info)->model_sha256;
    j["dims"] = (*info)->dims;
    j["metric"] = (*info)->metric;
    j["label_field"] = (*info)->label_field;
    j["embedding"] = (*info)->embedding.empty() ? json(nullptr) : ParseMeta((*info)->embedding);
    j["centred"] = !(*info)->centre.empty();
    auto res =
        (*store)->Execute("SELECT field(metadata, " + SqlStringLiteral((*info)->label_field) +
                          "), count(*) FROM items GROUP BY 1 ORDER BY 1");
    if (res.ok() && !res->empty()) {
      for (const auto& row : res->back().rows) {
        label_counts[SqlValueText(row[0])] = std::get<int64_t>(row[1]);
      }
    }
    j["labels"] = label_counts;
  }
  auto state = ReadIndexState(**store);
  if (!state.ok()) return Fail(state.status());
  std::string index_line = (*store)->ingest_queue()
                               ? "in memory on each server (`nearlabel serve` builds it; "
                                 "classify and search scan exactly)"
                               : "none (nearlabel index build " + MaskedLocation(path) + ")";
  if (state->exists) {
    j["index"] = {{"file", state->file},
                  {"rows", state->rows},
                  {"last_row_id", state->last_row_id},
                  {"m", state->params.m},
                  {"ef_construction", state->params.ef_construction}};
    index_line = "HNSW m=" + std::to_string(state->params.m) +
                 ", ef-construction=" + std::to_string(state->params.ef_construction) + ", " +
                 std::to_string(state->rows) + " rows when saved, " + state->file;
    // Deleted rows stay in the graph as marked entries until an update rebuilds it (past 20%).
    if (auto mapped =
            HnswIndex::Map(state->file, (*info)->dims, state->rows, HnswIndex::Access::kRead);
        mapped.ok()) {
      const size_t nodes = (*mapped)->nodes(), dead = (*mapped)->dead();
      j["index"]["entries"] = nodes;
      j["index"]["dead_entries"] = dead;
      index_line += "; " + std::to_string(dead) + " of " + std::to_string(nodes) +
                    " entries are deleted rows (" +
                    FormatDouble(nodes ? 100.0 * static_cast<double>(dead) / nodes : 0.0, 1) +
                    " %)";
    }
  }
  if (!IsPostgresUri(path)) {
    auto seg = VectorSegment::Map(SegmentPath(path), *info ? (*info)->dims : 0);
    j["segment"] = seg.ok() ? json{{"file", SegmentPath(path)},
                                   {"rows", (*seg)->rows()},
                                   {"change_id", (*seg)->change_id()}}
                            : json(nullptr);
  }
  if (g.json) {
    PrintJson(j);
    return 0;
  }
  std::printf("store        %s\nrows         %lld\nindex        %s\n", path.c_str(),
              static_cast<long long>(*count), index_line.c_str());
  if (*info) {
    std::printf("model        %s (%d-d, %s, sha256 %s)\nlabel field  %s\n", (*info)->model.c_str(),
                (*info)->dims, (*info)->metric.c_str(), (*info)->model_sha256.c_str(),
                (*info)->label_field.c_str());
    std::printf("embedding    %s%s\n",
                (*info)->embedding.empty() ? "the card's preprocessing (a store from before "
                                             "embedding options)"
                                           : (*info)->embedding.c_str(),
                (*info)->centre.empty() ? "" : "; rows centred on their mean");
    for (const auto& [l, n] : label_counts) {
      std::printf("  %-24s %lld\n", l.c_str(), static_cast<long long>(n));
    }
  }
  return 0;
}

int RunModels(const Global& g) {
  auto dirs = ModelSearchDirs(g.model_dirs);
  std::vector<std::string> errors;
  auto models = ListModels(dirs, &errors);
  json j = json::array();
  std::vector<std::vector<std::string>> rows;
  for (const auto& m : models) {
    j.push_back(
        {{"name", m.name},
         {"dims", m.dims},
         {"input", std::to_string(m.preprocess.width) + "x" + std::to_string(m.preprocess.height)},
         {"onnx", m.onnx_path},
         {"available", !m.onnx_path.empty()},
         {"card", m.card_path},
         {"description", m.description}});
    rows.push_back(
        {m.name + (m.name == kDefaultModel ? " (default)" : ""), std::to_string(m.dims),
         m.onnx_path.empty() ? "missing: put " + m.file + " in a models dir" : m.onnx_path});
  }
  if (g.json) {
    PrintJson(j);
  } else {
    std::string where;
    for (const auto& d : dirs) where += " " + d;
    std::printf("models directories:%s\n\n", where.c_str());
    PrintTable({"model", "dims", "onnx file"}, rows);
  }
  for (const auto& e : errors) std::fprintf(stderr, "nearlabel: warning: %s\n", e.c_str());
  return 0;
}

}  // namespace

void AddStoreCommands(CLI::App& app, const Global& g, Runner* run) {
  static std::string sql_store, sql_query;
  static bool sql_write = false;
  auto* sql = app.add_subcommand(
      "sql",
      "Run SQL on a store (read-only unless --write). Tables: items(id, source, sha256, metadata, "
      "embedding), collection(key, value); view aihub_labels for AI Hub stores. Functions: "
      "vector_distance(a, b [, 'COSINE'|'EUCLIDEAN'|'EUCLIDEAN_SQUARED'|'DOT'|'MANHATTAN']), "
      "to_vector('[1,2]'), from_vector(blob), vector_dims(v), vector_norm(v), field(metadata, "
      "'name'). On a PostgreSQL store metadata is jsonb (->, ->>, @>) and only field() and "
      "vector_dims() exist: the vector work is nearlabel's (classify, search, eval). Without a "
      "query, statements are read from stdin.");
  sql->add_option("store", sql_store, kStoreHelp)->required();
  sql->add_option("query", sql_query, "SQL statement(s)");
  sql->add_flag("--write", sql_write, "Allow statements that write");

  static std::string info_store;
  auto* info = app.add_subcommand(
      "info",
      "Show a store's model, size, label counts, its index (and the share of its entries "
      "that are deleted rows) and its vector segment");
  info->add_option("store", info_store, kStoreHelp)->required();

  static std::string check_store;
  auto* check = app.add_subcommand(
      "check",
      "Verify a whole store: SQLite's integrity check, every embedding (finite, unit length), "
      "every row's metadata, the index against the table, and the vector segment (its "
      "checksums, its rows against the table). Changes nothing; exit 1 and "
      "what to do when a check fails");
  check->add_option("store", check_store, kStoreHelp)->required();

  auto* models = app.add_subcommand("models", "List the models nearlabel can find");

  sql->callback([&g, run] { *run = [&g] { return RunSql(sql_store, sql_query, sql_write, g); }; });
  info->callback([&g, run] { *run = [&g] { return RunInfo(info_store, g); }; });
  check->callback([&g, run] { *run = [&g] { return RunCheck(check_store, g); }; });
  models->callback([&g, run] { *run = [&g] { return RunModels(g); }; });
}

}  // namespace nearlabel::cli
