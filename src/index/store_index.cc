// The index of a store: which file is current (store settings), loading with catch-up, and
// the generation-by-generation save. See include/nearlabel/index.h for the protocol.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iterator>

#include "common/crash_point.h"
#include "nearlabel/index.h"

namespace nearlabel {
namespace {

namespace fs = std::filesystem;

constexpr const char* kFile = "index.file";
constexpr const char* kSha = "index.sha256";
constexpr const char* kM = "index.m";
constexpr const char* kEfConstruction = "index.ef_construction";
constexpr const char* kLastRowId = "index.last_row_id";
constexpr const char* kRows = "index.rows";
constexpr const char* kGeneration = "index.generation";
constexpr const char* kChangeId = "index.change_id";
// Past this share of deleted nodes an update rebuilds the graph instead of marking more: a
// marked node still costs the walks and the file (8 delete/re-ingest cycles had grown the
// file 9x and dropped recall@10 to 0.93).
constexpr double kMaxDeadShare = 0.2;

// The newest change before a read of the table (0 without a change log): the index built
// from that read holds at least every change up to it.
Result<int64_t> NewestChange(Store& store) {
  auto feed = store.OpenChangeFeed();
  if (!feed.ok()) return int64_t{-1};
  return (*feed)->LastChangeId();
}

std::string StoreDir(const Store& store) {
  fs::path p(store.location());
  return p.has_parent_path() ? p.parent_path().string() : ".";
}

std::string StoreBase(const Store& store) { return fs::path(store.location()).filename().string(); }

Result<int64_t> IntSetting(Store& store, const char* key) {
  NL_ASSIGN_OR_RETURN(std::string v, store.GetSetting(key));
  if (v.empty()) return int64_t{0};
  try {
    return static_cast<int64_t>(std::stoll(v));
  } catch (const std::exception&) {
    return Status::Corruption("store setting " + std::string(key) + " is not a number: " + v);
  }
}

// Removes index files of this store that are not `current`: older generations and temporary
// files of saves that were killed (a temporary file of a live process is left alone).
void RemoveStaleFiles(const Store& store, const std::string& current) {
  const std::string base = StoreBase(store);
  const std::string gen_prefix = base + ".hnsw-";
  const std::string tmp_prefix = "." + gen_prefix;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(StoreDir(store), ec)) {
    const std::string name = entry.path().filename().string();
    if (name == current) continue;
    if (name.rfind(tmp_prefix, 0) == 0) {
      const auto at = name.rfind(".tmp-");
      if (at == std::string::npos) continue;
      const long pid = std::atol(name.c_str() + at + 5);
      if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) == 0) continue;  // a save in progress
      fs::remove(entry.path(), ec);
    } else if (name.rfind(gen_prefix, 0) == 0 &&
               name.find_first_not_of("0123456789", gen_prefix.size()) == std::string::npos) {
      fs::remove(entry.path(), ec);
    }
  }
}

}  // namespace

Result<StoreIndexState> ReadIndexState(Store& store) {
  StoreIndexState s;
  NL_ASSIGN_OR_RETURN(std::string file, store.GetSetting(kFile));
  if (file.empty()) return s;
  s.exists = true;
  s.file = (fs::path(StoreDir(store)) / file).string();
  NL_ASSIGN_OR_RETURN(s.sha256, store.GetSetting(kSha));
  NL_ASSIGN_OR_RETURN(int64_t m, IntSetting(store, kM));
  NL_ASSIGN_OR_RETURN(int64_t efc, IntSetting(store, kEfConstruction));
  NL_ASSIGN_OR_RETURN(s.last_row_id, IntSetting(store, kLastRowId));
  NL_ASSIGN_OR_RETURN(int64_t rows, IntSetting(store, kRows));
  s.params.m = static_cast<int>(m);
  s.params.ef_construction = static_cast<int>(efc);
  s.rows = static_cast<size_t>(rows);
  return s;
}

Result<std::unique_ptr<HnswIndex>> OpenStoreIndex(Store& store, size_t max_catch_up,
                                                  IndexCatchUp* catch_up) {
  NL_ASSIGN_OR_RETURN(StoreIndexState state, ReadIndexState(store));
  if (!state.exists) {
    return Status::NotFound("store " + store.location() +
                            " has no index (build one with `nearlabel index build`)");
  }
  NL_ASSIGN_OR_RETURN(auto info, store.GetCollection());
  if (!info) return Status::Corruption("store " + store.location() + " has an index but no rows");
  NL_ASSIGN_OR_RETURN(auto index,
                      HnswIndex::Load(state.file, info->dims, state.params, state.sha256));
  // Catch up with the table: rows added or deleted since the save (a killed ingest, an
  // ingest with --index off, a delete whose save did not finish).
  NL_ASSIGN_OR_RETURN(std::vector<int64_t> table_ids, store.SelectIds(""));
  const std::vector<int64_t> index_ids = index->Ids();
  std::vector<int64_t> missing, gone;
  std::set_difference(table_ids.begin(), table_ids.end(), index_ids.begin(), index_ids.end(),
                      std::back_inserter(missing));
  std::set_difference(index_ids.begin(), index_ids.end(), table_ids.begin(), table_ids.end(),
                      std::back_inserter(gone));
  if (missing.size() > max_catch_up) {
    return Status::InvalidArgument(
        "the index covers " + std::to_string(index_ids.size() - gone.size()) + " of " +
        std::to_string(table_ids.size()) +
        " rows; bring it up to date with `nearlabel index build " + store.location() + "`");
  }
  index->Remove(gone);
  for (size_t at = 0; at < missing.size(); at += 500) {
    std::string in;
    for (size_t i = at; i < std::min(missing.size(), at + 500); ++i) {
      in += (in.empty() ? "" : ",") + std::to_string(missing[i]);
    }
    NL_ASSIGN_OR_RETURN(VectorTable t, store.LoadVectors("id IN (" + in + ")"));
    NL_RETURN_IF_ERROR(index->Add(t.ids.data(), t.vectors.data(), t.size()));
  }
  if (catch_up) *catch_up = {missing.size(), gone.size()};
  return index;
}

Status SaveStoreIndex(Store& store, const HnswIndex& index, int64_t change_id) {
  NL_ASSIGN_OR_RETURN(int64_t generation, IntSetting(store, kGeneration));
  ++generation;
  const std::string name = StoreBase(store) + ".hnsw-" + std::to_string(generation);
  const std::string path = (fs::path(StoreDir(store)) / name).string();
  NL_ASSIGN_OR_RETURN(std::string sha, index.Save(path));
  CrashPoint("index-save:renamed");
  const std::vector<int64_t> ids = index.Ids();
  Status st = store.PutSettings({{kFile, name},
                                 {kSha, sha},
                                 {kM, std::to_string(index.params().m)},
                                 {kEfConstruction, std::to_string(index.params().ef_construction)},
                                 {kLastRowId, std::to_string(ids.empty() ? 0 : ids.back())},
                                 {kRows, std::to_string(ids.size())},
                                 {kGeneration, std::to_string(generation)},
                                 {kChangeId, change_id < 0 ? "" : std::to_string(change_id)}});
  if (!st.ok()) {
    std::error_code ec;
    fs::remove(path, ec);  // the store still names the previous generation
    return st;
  }
  CrashPoint("index-save:committed");
  RemoveStaleFiles(store, name);
  return Status::OK();
}

Result<std::unique_ptr<HnswIndex>> BuildStoreIndex(Store& store, const IndexBuildParams& params) {
  if (store.ingest_queue()) {
    // A shared store has many readers on many machines: no file next to it to keep.
    return Status::Unsupported(
        "store " + store.location() +
        " is shared (PostgreSQL): it keeps no index file; each `nearlabel serve` builds its "
        "index in memory and keeps it in step with the table");
  }
  NL_ASSIGN_OR_RETURN(auto info, store.GetCollection());
  if (!info)
    return Status::InvalidArgument("store " + store.location() + " is empty: ingest first");
  NL_ASSIGN_OR_RETURN(int64_t change_id, NewestChange(store));
  NL_ASSIGN_OR_RETURN(VectorTable table, store.LoadVectors(""));
  auto index = HnswIndex::Create(info->dims, params);
  NL_RETURN_IF_ERROR(
      index->Add(table.ids.data(), table.vectors.data(), table.size(), params.threads));
  NL_RETURN_IF_ERROR(SaveStoreIndex(store, *index, change_id));
  return index;
}

Result<IndexUpdate> UpdateStoreIndex(Store& store, bool create, const IndexBuildParams& params) {
  IndexUpdate u;
  NL_ASSIGN_OR_RETURN(StoreIndexState state, ReadIndexState(store));
  if (!state.exists && !create) return u;
  const auto t0 = std::chrono::steady_clock::now();
  auto done = [&](IndexUpdate::Action action, size_t rows) {
    u.action = action;
    u.rows = rows;
    u.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return u;
  };
  if (state.exists) {
    IndexCatchUp cu;
    NL_ASSIGN_OR_RETURN(int64_t change_id, NewestChange(store));
    auto index = OpenStoreIndex(store, SIZE_MAX, &cu);
    NL_ASSIGN_OR_RETURN(std::string saved_at, store.GetSetting(kChangeId));
    if (index.ok() && (*index)->dead() > kMaxDeadShare * static_cast<double>((*index)->nodes())) {
      u.why_rebuilt = std::to_string((*index)->dead()) + " of its " +
                      std::to_string((*index)->nodes()) + " entries were deleted rows";
    } else if (index.ok()) {
      if (cu.added == 0 && cu.removed == 0 && !saved_at.empty()) {
        return done(IndexUpdate::Action::kUpToDate, (*index)->size());
      }
      NL_RETURN_IF_ERROR(SaveStoreIndex(store, **index, change_id));
      u.added = cu.added;
      u.removed = cu.removed;
      return done(IndexUpdate::Action::kCaughtUp, (*index)->size());
    } else {
      u.why_rebuilt = index.status().message();
    }
  }
  IndexBuildParams p = params;
  if (state.exists && state.params.m > 0 && state.params.ef_construction > 0) {
    p.m = state.params.m;
    p.ef_construction = state.params.ef_construction;
  }
  NL_ASSIGN_OR_RETURN(auto index, BuildStoreIndex(store, p));
  return done(IndexUpdate::Action::kBuilt, index->size());
}

std::string IndexUpdateSummary(const IndexUpdate& u) {
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.3f", u.seconds);
  switch (u.action) {
    case IndexUpdate::Action::kNone:
      return "";
    case IndexUpdate::Action::kUpToDate:
      return "index: up to date (" + std::to_string(u.rows) + " rows)";
    case IndexUpdate::Action::kCaughtUp:
      return "index: added " + std::to_string(u.added) + ", removed " + std::to_string(u.removed) +
             " rows in " + secs + " s (" + std::to_string(u.rows) + " rows)";
    case IndexUpdate::Action::kBuilt:
      return "index: built over " + std::to_string(u.rows) + " rows in " + secs + " s" +
             (u.why_rebuilt.empty() ? "" : " (" + u.why_rebuilt + ")");
  }
  return "";
}

}  // namespace nearlabel
