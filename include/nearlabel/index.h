// The approximate vector index: an HNSW graph (Debian's hnswlib builds and stores it) over a
// store's rows, keyed by row id, with a filtered walk of our own and an atomic, checksummed
// file next to the store. See ARCHITECTURE.md ("Vector index") for the file layout and the
// query plan.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "nearlabel/status.h"
#include "nearlabel/store.h"

namespace nearlabel {

struct IndexBuildParams {
  int m = 16;                 // graph degree (2m links per node on the base layer)
  int ef_construction = 200;  // candidate list while inserting: higher builds slower, better
  int threads = 0;            // insert threads (0: one per core)
};

// A neighbour by store row id.
struct IdNeighbor {
  int64_t id = 0;
  float distance = 0;  // cosine distance, 1 - dot product
};

// The ids a search may return (FAISS's IDSelector): one filter for every index type, by store
// row id, so it means the same to the graph, the flat scan and the rows added since the index
// was saved. Built once per query filter; `Allows` is a bitmap test when the ids are dense, a
// binary search otherwise. Immutable after construction: thread-safe.
class IdSelector {
 public:
  IdSelector() = default;
  // Allows exactly `ids` (any order, duplicates ignored).
  explicit IdSelector(std::vector<int64_t> ids);
  bool Allows(int64_t id) const {
    if (id < lo_ || id > hi_) return false;
    if (!bits_.empty()) {
      const uint64_t at = static_cast<uint64_t>(id - lo_);
      return (bits_[at >> 6] >> (at & 63)) & 1;
    }
    return std::binary_search(ids_.begin(), ids_.end(), id);
  }
  size_t count() const { return ids_.size(); }              // ids allowed
  const std::vector<int64_t>& ids() const { return ids_; }  // ascending

 private:
  std::vector<int64_t> ids_;
  int64_t lo_ = 1, hi_ = 0;
  std::vector<uint64_t> bits_;
};
using IndexFilter = IdSelector;

// Per-query parameters.
struct IndexSearchParams {
  int k = 10;
  int ef = 0;  // candidate list of the walk; 0: max(k, kDefaultEf). Higher: better recall, slower
  const IdSelector* filter = nullptr;  // null: every live row
  // Ids never returned whatever the filter (rows changed since the index was saved, which
  // the caller answers from their current vectors). Null: none.
  const std::unordered_set<int64_t>* exclude = nullptr;
  bool exact = false;  // scan instead of walking the graph
  static constexpr int kDefaultEf = 128;
};

// How a query was answered (for `-v`, `index check` and the benchmark).
struct IndexSearchStats {
  enum class Plan { kGraph, kGraphWidened, kExactFiltered, kExact } plan = Plan::kGraph;
  int ef_used = 0;
  size_t distances = 0;  // distance computations
};
const char* PlanName(IndexSearchStats::Plan plan);

// The query plan's one rule for a filter: scanning the `allowed` of `live` rows exactly costs
// less than a walk with candidate list `ef` would (HnswIndex::Search and the collection's
// planner both ask it).
bool FilterScanIsCheaper(size_t allowed, size_t live, size_t ef);

class HnswIndex {
 public:
  ~HnswIndex();
  HnswIndex(const HnswIndex&) = delete;
  HnswIndex& operator=(const HnswIndex&) = delete;

  // An empty index for unit vectors of `dims` floats.
  static std::unique_ptr<HnswIndex> Create(int dims, const IndexBuildParams& params);

  // Adds rows (ids must not be in the index yet; vectors are n x dims, unit length), using
  // params.threads threads. Not thread-safe with searches or other writes. Unsupported on a
  // mapped index.
  Status Add(const int64_t* ids, const float* vectors, size_t n, int threads = 0);
  // Marks rows deleted: they are never returned again. Returns how many were present.
  size_t Remove(const std::vector<int64_t>& ids);

  // The k nearest live rows to `query` (dims floats, unit length), nearest first. With a
  // filter it returns min(k, rows allowed) rows: the walk skips rows the filter rejects,
  // widens ef when too few pass, and scans the allowed rows exactly when the filter is so
  // selective that a scan is cheaper than the walk. Thread-safe with other searches.
  std::vector<IdNeighbor> Search(const float* query, const IndexSearchParams& params,
                                 IndexSearchStats* stats = nullptr) const;

  // A filter allowing `ids` (the same as IdSelector(ids), kept for callers of the index alone).
  IndexFilter MakeFilter(const std::vector<int64_t>& ids) const { return IdSelector(ids); }

  // Live row ids, ascending.
  std::vector<int64_t> Ids() const;
  size_t size() const;   // live rows
  size_t nodes() const;  // every node, deleted ones included
  size_t dead() const { return nodes() - size(); }
  int dims() const { return dims_; }
  const IndexBuildParams& params() const { return params_; }
  // Bytes of memory the graph and its vector copy use.
  size_t MemoryBytes() const;

  // Writes the index to `path` atomically: a temporary file in the same directory, fsync,
  // checked size, rename, fsync of the directory. Returns the file's sha256.
  Result<std::string> Save(const std::string& path) const;
  // Opens an index written by Save for searching straight from the file: its vectors and
  // links are served from a read-only memory map, nothing is copied into the heap, so opening
  // costs the same at any size and a query touches only the pages its walk visits. The file's
  // header and size are checked (the sha256 is checked by `nearlabel check`: hashing the whole
  // file would read every page); every link the walk follows is bounds-checked, so a damaged
  // file gives poor answers, never a crash. Add and Save are refused (Unsupported); Remove
  // works in memory. `live_rows`: the live rows the file holds as recorded at its save (the
  // store's index.rows); SIZE_MAX counts its deletion marks (a pass over every node).
  // `access`: kMapped serves nodes from a shared memory map (for processes that answer many
  // queries); kRead reads the nodes a search visits with pread into a per-search cache (for a
  // one-shot command: a map's faults can each make megabytes resident, see hnsw_index.cc).
  enum class Access { kMapped, kRead };
  static Result<std::unique_ptr<HnswIndex>> Map(const std::string& path, int dims,
                                                size_t live_rows = SIZE_MAX,
                                                Access access = Access::kMapped);
  bool mapped() const;
  // Reads an index written by Save; `sha256` (when non-empty) must match the file.
  static Result<std::unique_ptr<HnswIndex>> Load(const std::string& path, int dims,
                                                 const IndexBuildParams& params,
                                                 const std::string& sha256);

 private:
  struct Impl;
  HnswIndex(int dims, const IndexBuildParams& params);
  Status AddToGraph(const int64_t* ids, const float* vectors, size_t n, int threads);
  int dims_;
  IndexBuildParams params_;
  std::unique_ptr<Impl> impl_;
};

// ---- The index of a store ----
// A store's index lives in "<store>.hnsw-<generation>"; the store's settings record which
// generation is current, its sha256, its parameters and the highest row id it covers. A save
// writes a new generation, commits the settings, then removes the old file, so a process
// killed at any point leaves either the old index or the new one, never a torn one.

struct StoreIndexState {
  bool exists = false;  // the store has an index
  std::string file;     // current index file
  std::string sha256;
  IndexBuildParams params;
  int64_t last_row_id = 0;  // highest row id covered when saved
  size_t rows = 0;          // live rows when saved
};
Result<StoreIndexState> ReadIndexState(Store& store);

// How OpenStoreIndex brought the index up to date with the table.
struct IndexCatchUp {
  size_t added = 0;    // rows in the table the saved index lacked
  size_t removed = 0;  // rows deleted from the table since the save
};

// Loads the store's index and catches it up with the table (adds missing rows, drops deleted
// ones) in memory. Fails with NotFound when the store has no index, Corruption when the file
// is missing or its checksum differs (the caller may rebuild or search exactly), and
// InvalidArgument when more than `max_catch_up` rows would have to be added.
Result<std::unique_ptr<HnswIndex>> OpenStoreIndex(Store& store, size_t max_catch_up,
                                                  IndexCatchUp* catch_up = nullptr);

// Builds a new index over every row of the store and saves it (store open read-write).
Result<std::unique_ptr<HnswIndex>> BuildStoreIndex(Store& store, const IndexBuildParams& params);

// Saves `index` as the store's new current generation (see above). `change_id`: the newest
// change the index is known to hold (read before the rows it was built or caught up from);
// readers answer every row changed after it from the row's current vector. -1: unknown
// (readers compare the index's ids with the table's).
Status SaveStoreIndex(Store& store, const HnswIndex& index, int64_t change_id = -1);

// What UpdateStoreIndex did.
struct IndexUpdate {
  enum class Action {
    kNone,      // the store has no index (and none was asked for)
    kUpToDate,  // nothing to do
    kCaughtUp,  // rows added and removed, saved as a new generation
    kBuilt,     // built from the table (asked for, missing, damaged or too many dead entries)
  } action = Action::kNone;
  size_t added = 0, removed = 0;  // kCaughtUp
  size_t rows = 0;                // live rows in the index now
  double seconds = 0;
  std::string why_rebuilt;  // kBuilt of an existing index: why (damaged, dead entries)
};

// Brings the store's index (if it has one, or `create` is set) up to date and saves it when
// it changed: used after ingest and delete. A missing or damaged index file is rebuilt, and
// so is one whose deleted entries pass 20 % of its nodes.
Result<IndexUpdate> UpdateStoreIndex(Store& store, bool create, const IndexBuildParams& params);
// One line for the user ("index: added 3, removed 0 rows in 0.012 s (903 rows)"; "" for kNone).
std::string IndexUpdateSummary(const IndexUpdate& update);

}  // namespace nearlabel
