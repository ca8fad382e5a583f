#include "nearlabel/check.h"

#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "common/json.h"
#include "nearlabel/collection.h"
#include "nearlabel/index.h"
#include "nearlabel/segment.h"

namespace nearlabel {

namespace {

std::string Ids(const std::vector<int64_t>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size() && i < 10; ++i) out += (i ? "," : "") + std::to_string(ids[i]);
  return out + (ids.size() > 10 ? ",..." : "");
}

CheckItem CheckFile(Store& store) {
  CheckItem c{"file integrity", true, "", ""};
  Status st = store.CheckIntegrity();
  c.ok = st.ok();
  c.detail = st.ok() ? "no damage found" : st.message();
  if (!c.ok) c.fix = "restore the store from a backup; nearlabel refuses to write into it";
  return c;
}

// Embeddings and metadata, from one pass over the rows.
void CheckRows(const VectorTable& table, StoreCheckReport* report) {
  CheckItem e{"embeddings", table.damaged.empty(), "", ""};
  e.detail = std::to_string(table.size()) + " rows are finite unit vectors";
  if (!e.ok) {
    std::vector<int64_t> ids;
    for (const auto& [id, why] : table.damaged) ids.push_back(id);
    e.detail = DamagedRowsSummary(table) + "; left out of every search";
    e.fix = "delete the rows (nearlabel delete STORE --where 'id IN (" + Ids(ids) +
            ")') and ingest their images again";
  }
  report->items.push_back(e);
  std::vector<int64_t> bad_meta;
  for (size_t i = 0; i < table.size(); ++i) {
    if (!ParseJson(table.metadata[i]).is_object()) bad_meta.push_back(table.ids[i]);
  }
  CheckItem m{"metadata", bad_meta.empty(), "", ""};
  m.detail = bad_meta.empty()
                 ? "every row's metadata is a JSON object"
                 : std::to_string(bad_meta.size()) +
                       " rows hold metadata that is not a JSON object within " +
                       std::to_string(kMaxJsonDepth) + " levels (rows " + Ids(bad_meta) + ")";
  if (!m.ok) m.fix = "fix them with nearlabel sql STORE --write \"UPDATE items SET ...\"";
  report->items.push_back(m);
}

CheckItem CheckIndex(Store& store, const VectorTable& table) {
  CheckItem c{"index", true, "", ""};
  auto state = ReadIndexState(store);
  if (!state.ok() || !state->exists) {
    c.detail = state.ok() ? "none (searches scan every row)" : state.status().message();
    c.ok = state.ok();
    return c;
  }
  IndexCatchUp cu;
  auto index = OpenStoreIndex(store, SIZE_MAX, &cu);
  if (!index.ok()) {
    c.ok = false;
    c.detail = index.status().message();
    c.fix = "rebuild it: nearlabel index build STORE (searches scan exactly until then)";
    return c;
  }
  // Caught up, the index holds exactly the live rows; a row whose stored embedding is
  // damaged is live in the table but was indexed from its earlier, intact bytes.
  std::unordered_set<int64_t> good(table.ids.begin(), table.ids.end());
  std::vector<int64_t> stale;
  for (int64_t id : (*index)->Ids()) {
    if (!good.count(id)) stale.push_back(id);
  }
  c.ok = stale.empty();
  c.detail = std::to_string((*index)->size()) + " rows indexed (" + std::to_string(cu.added) +
             " added and " + std::to_string(cu.removed) + " removed since it was saved)";
  if (!c.ok) {
    c.detail += "; it still holds rows whose stored embedding is damaged (" + Ids(stale) + ")";
    c.fix = "delete those rows and ingest their images again; the index follows";
  }
  return c;
}

// The vector segment next to a SQLite store: every chunk's checksum, and its rows against
// the table (rows changed since it was written are caught up by the next open, not damage).
CheckItem CheckSegment(Store& store, const VectorTable& table) {
  CheckItem c{"vector segment", true, "", ""};
  if (IsPostgresUri(store.location())) {
    c.detail = "none (a PostgreSQL store; each server keeps its own)";
    return c;
  }
  const std::string path = SegmentPath(store.location());
  auto seg = VectorSegment::Map(path, table.dims);
  if (!seg.ok()) {
    c.ok = seg.status().code() == Status::Code::kNotFound;
    c.detail = c.ok ? "none yet (the next search writes it)" : seg.status().message();
    if (!c.ok) c.fix = "nothing to do: the next command rebuilds it from the table";
    return c;
  }
  Status st = (*seg)->Verify();
  size_t differ = 0;
  for (size_t i = 0; st.ok() && i < table.size(); ++i) {
    const long at = (*seg)->Find(table.ids[i]);
    if (at >= 0 && std::memcmp((*seg)->row(static_cast<size_t>(at)), table.row(i),
                               static_cast<size_t>(table.dims) * sizeof(float)) != 0) {
      ++differ;
    }
  }
  c.ok = st.ok() && differ == 0;
  c.detail = !st.ok() ? st.message()
             : differ
                 ? std::to_string(differ) + " rows differ from the table"
                 : std::to_string((*seg)->rows()) + " rows, checksums match, equal to the table";
  if (!c.ok) c.fix = "remove " + path + "; the next command rebuilds it from the table";
  return c;
}

}  // namespace

Result<StoreCheckReport> CheckStore(Store& store) {
  StoreCheckReport report;
  NL_ASSIGN_OR_RETURN(auto info, store.GetCollection());
  report.items.push_back(CheckFile(store));
  if (!report.items.back().ok) return report;  // reading rows of a damaged file proves nothing
  if (!info) {
    report.items.push_back({"rows", true, "the store is empty (nothing ingested yet)", ""});
    return report;
  }
  auto table = store.LoadVectors("");
  if (!table.ok()) {
    report.items.push_back(
        {"embeddings", false, table.status().message(), "restore the store from a backup"});
    return report;
  }
  CheckRows(*table, &report);
  report.items.push_back(CheckIndex(store, *table));
  report.items.push_back(CheckSegment(store, *table));
  return report;
}

}  // namespace nearlabel
