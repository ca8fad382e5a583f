#include "cli/cli.h"

namespace nearlabel::cli {
namespace {

// ---------------------------------------------------------------- index / delete
struct IndexArgs {
  std::string store;
  IndexBuildParams params;
  int sample = 200, k = 10, ef = 0;
};

int RunIndexBuild(const IndexArgs& a, const Global& g) {
  auto store = OpenForWriting(a.store, Store::Mode::kReadWrite);
  if (!store.ok()) return Fail(store.status());
  const auto t0 = std::chrono::steady_clock::now();
  auto index = BuildStoreIndex(**store, a.params);
  if (!index.ok()) return Fail(index.status());
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto state = ReadIndexState(**store);
  if (!state.ok()) return Fail(state.status());
  if (g.json) {
    PrintJson({{"store", MaskedLocation(a.store)},
               {"file", state->file},
               {"rows", (*index)->size()},
               {"m", a.params.m},
               {"ef_construction", a.params.ef_construction},
               {"seconds", s},
               {"memory_bytes", (*index)->MemoryBytes()}});
  } else {
    std::printf("index built over %zu rows in %.1f s (m=%d, ef-construction=%d): %s, %.1f MB\n",
                (*index)->size(), s, a.params.m, a.params.ef_construction, state->file.c_str(),
                static_cast<double>((*index)->MemoryBytes()) / 1e6);
  }
  return 0;
}

// Recall@k of the index against exact search, on a sample of stored rows used as queries
// (the query row itself counts: it is its own nearest neighbour in both).
int RunIndexCheck(const IndexArgs& a, const Global& g) {
  auto store = OpenStore(a.store, Store::Mode::kReadOnly);
  if (!store.ok()) return Fail(store.status());
  IndexCatchUp cu;
  auto index = OpenStoreIndex(**store, SIZE_MAX, &cu);
  if (!index.ok()) return Fail(index.status());
  auto table = (*store)->LoadVectors("");
  if (!table.ok()) return Fail(table.status());
  WarnDamaged(*table, **store);
  const size_t n = table->size();
  const size_t sample = std::min<size_t>(static_cast<size_t>(a.sample), n);
  size_t found = 0, total = 0;
  double graph_ms = 0, exact_ms = 0;
  for (size_t s = 0; s < sample; ++s) {
    const float* q = table->row(s * n / std::max<size_t>(sample, 1));
    SearchParams sp;
    sp.k = a.k;
    auto t0 = std::chrono::steady_clock::now();
    auto exact = ExactSearch(*table, q, sp);
    auto t1 = std::chrono::steady_clock::now();
    IndexSearchParams ip;
    ip.k = a.k;
    ip.ef = a.ef;
    auto got = (*index)->Search(q, ip);
    auto t2 = std::chrono::steady_clock::now();
    exact_ms += std::chrono::duration<double, std::milli>(t1 - t0).count();
    graph_ms += std::chrono::duration<double, std::milli>(t2 - t1).count();
    // A returned row counts when exact search returned it too, or when it ties with the k-th
    // exact neighbour: its float32 distance is within 0.1% of the k-th's (ann-benchmarks'
    // convention; the graph's half-precision copies may order near-ties differently).
    std::set<int64_t> want;
    for (auto& nb : exact) want.insert(table->ids[nb.row]);
    const float kth = exact.empty() ? 0.0f : exact.back().distance;
    for (auto& nb : got) {
      if (want.count(nb.id)) {
        ++found;
        continue;
      }
      auto pos = std::lower_bound(table->ids.begin(), table->ids.end(), nb.id);
      if (pos == table->ids.end() || *pos != nb.id) continue;
      const float* row = table->row(static_cast<size_t>(pos - table->ids.begin()));
      const float d = 1.0f - InnerProduct(q, row, static_cast<size_t>(table->dims));
      if (d <= kth * 1.001f + 1e-6f) ++found;
    }
    total += exact.size();
  }
  const double recall = total ? static_cast<double>(found) / static_cast<double>(total) : 1.0;
  const int ef = std::max(a.k, a.ef > 0 ? a.ef : IndexSearchParams::kDefaultEf);
  if (g.json) {
    PrintJson({{"store", MaskedLocation(a.store)},
               {"rows", (*index)->size()},
               {"added_since_save", cu.added},
               {"removed_since_save", cu.removed},
               {"sample", sample},
               {"k", a.k},
               {"ef", ef},
               {"recall", recall},
               {"index_ms_per_query", sample ? graph_ms / sample : 0},
               {"exact_ms_per_query", sample ? exact_ms / sample : 0}});
  } else {
    std::printf(
        "index of %s: %zu rows (%zu added, %zu removed since it was saved)\n"
        "recall@%d = %.4f on %zu sample queries at ef=%d; %.3f ms/query (exact scan %.3f ms)\n",
        a.store.c_str(), (*index)->size(), cu.added, cu.removed, a.k, recall, sample, ef,
        sample ? graph_ms / sample : 0, sample ? exact_ms / sample : 0);
  }
  return 0;
}

int RunDelete(const std::string& location, const std::string& where, const Global& g) {
  auto store = OpenForWriting(location, Store::Mode::kReadWrite);
  if (!store.ok()) return Fail(store.status());
  auto ids = (*store)->Delete(where);
  if (!ids.ok()) return Fail(ids.status());
  // The rows are gone once Delete returns; the index follows (and catches up on its next
  // open should this step be interrupted).
  auto summary = UpdateStoreIndex(**store, false, IndexBuildParams());
  if (!summary.ok()) return Fail(summary.status().WithContext("rows deleted, index not updated"));
  if (g.json) {
    PrintJson({{"store", MaskedLocation(location)},
               {"deleted", ids->size()},
               {"ids", *ids},
               {"index", IndexUpdateSummary(*summary)}});
  } else {
    std::printf("deleted %zu rows from %s\n", ids->size(), location.c_str());
    if (summary->action != IndexUpdate::Action::kNone) {
      std::printf("%s\n", IndexUpdateSummary(*summary).c_str());
    }
  }
  return 0;
}

}  // namespace

void AddIndexCommands(CLI::App& app, const Global& g, Runner* run) {
  static IndexArgs xa;
  auto* index = app.add_subcommand(
      "index",
      "Manage a store's HNSW vector index (a file next to the store; classify and search use it "
      "when present, --exact to bypass it)");
  index->require_subcommand(1);
  auto* index_build = index->add_subcommand(
      "build", "Build (or rebuild) the index over every row; later ingests keep it up to date");
  index_build->add_option("store", xa.store, kStoreHelp)->required();
  AddGraphOptions(index_build, &xa.params, "");
  index_build->add_option("--threads", xa.params.threads, "Build threads (0: one per core)")
      ->check(CLI::Range(0, 256));
  auto* index_check = index->add_subcommand(
      "check", "Report the index's recall@k against exact search on a sample of stored rows");
  index_check->add_option("store", xa.store, kStoreHelp)->required();
  index_check->add_option("--sample", xa.sample, "Rows used as queries")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  index_check->add_option("-k,--k", xa.k, "Neighbours compared")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  index_check->add_option("--ef", xa.ef, "HNSW candidate list (default 128)")
      ->check(CLI::Range(1, 100000));

  static std::string delete_store, delete_where;
  auto* del = app.add_subcommand("delete",
                                 "Delete rows (and their index entries) matching an SQL condition");
  del->add_option("store", delete_store, kStoreHelp)->required();
  del->add_option("--where", delete_where,
                  "SQL condition on items, e.g. \"field(metadata,'label') = 'scratch'\" or "
                  "\"id IN (4, 7)\"")
      ->required();

  index_build->callback([&g, run] { *run = [&g] { return RunIndexBuild(xa, g); }; });
  index_check->callback([&g, run] { *run = [&g] { return RunIndexCheck(xa, g); }; });
  del->callback([&g, run] { *run = [&g] { return RunDelete(delete_store, delete_where, g); }; });
}

}  // namespace nearlabel::cli
