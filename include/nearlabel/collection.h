// A Collection: the one query engine every front end (CLI, server) calls. Opened on any store
// location, it owns the search copy of the vectors (a memory-mapped VectorSegment next to the
// store, caught up with the table through the change log), the store's HNSW index (served
// from its mapped file) and one query planner: index or exact, the `where` filter as an
// IdSelector, an exact scan when the filter is selective, the rows changed since the index
// was saved answered exactly, and every answer re-ranked with float32 vectors. Opening reads
// no vector; a query touches the pages it needs; the metadata of the k answers is read by id.
// See ARCHITECTURE.md ("Collection and query planner").
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nearlabel/classify.h"
#include "nearlabel/index.h"
#include "nearlabel/model.h"
#include "nearlabel/status.h"
#include "nearlabel/store.h"

namespace nearlabel {

class VectorSegment;

struct CollectionOptions {
  bool use_index = true;  // false: every query is an exact scan (--exact)
  // Write (build, compact) the segment file when its directory can be written. false, or a
  // read-only directory, or a store without a change log: the vectors are held in memory.
  bool write_segment = true;
  // Rows changed since the segment was written that are held in memory before the segment
  // is rewritten (when it can be): max(this, 10% of the rows).
  size_t max_overlay = 10000;
  // Rows changed since the index was saved that are answered exactly beside the graph; more
  // and every query is exact (a notice says to run `nearlabel index build`): max(this, 10%).
  size_t max_index_lag = 20000;
  // Where the segment lives: "" = next to a SQLite store ("photos.db.vectors"); for a
  // PostgreSQL store a directory of this node's own ("DIR/<store id>.vectors"), or "" to hold
  // the vectors in memory. The segment names the change it holds, so a node that was down
  // catches up from there.
  std::string cache_dir;
  // A store that keeps no index file of its own (PostgreSQL): build an HNSW index over the
  // rows at open (saved in cache_dir when there is one, as "<store id>.hnsw-<change>-<rows>",
  // and mapped from there on the next open). false: such a store is searched exactly.
  bool build_index = false;
  IndexBuildParams index_params;
  // How the index file is read (HnswIndex::Access): mapped for a process that answers many
  // queries (serve), read node by node for a one-shot command (classify, search).
  HnswIndex::Access index_access = HnswIndex::Access::kMapped;
  // Keep every row's source and metadata in memory, so answers read nothing from the store:
  // a PostgreSQL node then answers searches while the database is down. false: the k
  // answers' metadata is read by id.
  bool keep_metadata = false;
};

// Per-query options.
struct QueryOptions {
  int k = 10;
  int ef = 0;             // the walk's candidate list (0: the index's default)
  std::string where_sql;  // rows a query may return (`--within` and `--where`, joined); "": all
  bool exact = false;     // scan even when there is an index
};

// One neighbour of an answer, with what the store says about it.
struct AnswerRow {
  int64_t id = 0;
  float distance = 0;  // cosine distance from the stored float32 vector
  std::string source;
  std::string metadata;  // JSON text
};

struct Answer {
  std::vector<AnswerRow> neighbors;  // nearest first; ties by lower id
  IndexSearchStats stats;
  size_t candidates = 0;  // rows the query could return
  std::string plan;       // "HNSW index (m=16), graph" / "exact scan"
};

// What the collection holds and how it got there (for `info`, `-v`, /v1/stats).
struct CollectionState {
  size_t rows = 0;             // live rows
  size_t segment_rows = 0;     // rows in the segment file (or memory)
  std::string segment;         // its path ("" in memory)
  size_t overlay_added = 0;    // rows added since the segment was written
  size_t overlay_removed = 0;  // segment rows deleted since
  int64_t change_id = 0;       // every change up to this one is applied
  size_t index_rows = 0;       // 0: no index
  size_t index_lag = 0;        // rows changed since the index was saved
  std::string notices;   // what the user should know: a segment rebuilt, an index unusable, ...
  std::string log;       // routine work done while opening (first segment build, compaction)
  bool follows = false;  // the store has a change feed (Refresh applies other writers')
};

class Collection {
 public:
  ~Collection();

  // Opens the store at `location` (read-only: the collection never writes rows) with its
  // segment and index. An empty store is InvalidArgument ("ingest first").
  static Result<std::unique_ptr<Collection>> Open(const std::string& location,
                                                  const CollectionOptions& options = {});

  // The k nearest rows to `query` (dims floats, unit length) under `options`. Thread-safe
  // with other searches and with Refresh.
  Result<Answer> Search(const float* query, const QueryOptions& options) const;

  // Classification by the neighbours' `label_field` values (classify.h's vote), with open-set
  // rejection when `reject` is given.
  struct Classified {
    Answer answer;
    std::vector<std::string> labels;  // per neighbour
    Prediction prediction;            // confidence: calibrated when a Calibration was given
    double vote_share = 0;            // the winning class's share of the vote
    bool calibrated = false;
    bool unknown = false;
    std::string voted_label;  // when rejected: what the vote said
    float reject_threshold = -1;
    std::string rejected_why;
  };
  // The vote of the query's options.k nearest labelled rows; with `calibration` (fitted for
  // the same k: CachedCalibration) its confidence is the calibrated probability of the
  // winning label, else the vote's share.
  Result<Classified> Classify(const float* query, const QueryOptions& options,
                              const std::string& label_field, Vote vote,
                              const RejectThresholds* reject,
                              const Calibration* calibration = nullptr) const;

  // Applies every change committed after the ones already applied (another process's ingest
  // or delete, a server's own writes): rows added are searched at once, rows deleted never
  // returned again. Returns how many changes were applied. Thread-safe (takes the write lock
  // only to apply them).
  Result<size_t> Refresh();
  // Every live row's vector, in id order, as one segment (ids() and vectors(), no copy: the
  // mapped file when there is one). Changes committed before the call are folded in first
  // (the segment rewritten, or rebuilt in memory where it is held in memory). The segment
  // stays valid, unchanged, however long it is held: later changes make a new one.
  // Thread-safe.
  Result<std::shared_ptr<const VectorSegment>> Vectors();
  // Waits up to timeout_ms for a commit by any writer; true when one came.
  Result<bool> WaitForChanges(int timeout_ms);

  // The row with `id` as the store has it (NotFound when there is none). Thread-safe.
  Result<ItemRecord> GetItem(int64_t id) const;
  const CollectionInfo& info() const;
  const std::string& location() const;
  CollectionState state() const;
  size_t size() const;  // live rows

 private:
  struct Impl;
  explicit Collection(std::unique_ptr<Impl> impl);
  Result<Answer> Search(const float* query, const QueryOptions& options, bool rebuilt) const;
  std::unique_ptr<Impl> impl_;
};

// The model card of a store's collection `info` (found in `dirs`, ModelSearchDirs), or of
// `requested` when given: it must be the store's model (same name, same ONNX file by
// sha256, same dims), else Mismatch naming both. `location` names the store in messages.
// The card comes with the store's embedding options applied (CardWithStoreOptions), so
// what it embeds is comparable with the rows.
// `card` with the embedding options a store recorded in `info` (none for a store from before
// they existed). InvalidArgument when the recorded options do not parse.
Result<ModelCard> CardWithStoreOptions(const ModelCard& card, const CollectionInfo& info);

// The card an ingest embeds with: for a store that already holds this model (`existing`),
// its own options (CardWithStoreOptions); for a new store, `card` with `requested` applied,
// less centring on a shared store (`shared`: PostgreSQL), whose workers cannot rewrite every
// row in one transaction (Store::RewriteEmbeddings is SQLite's). One rule for the CLI and the
// Python module.
Result<ModelCard> CardForIngest(const ModelCard& card,
                                const std::optional<CollectionInfo>& existing,
                                EmbeddingOptions requested, bool shared);

Result<ModelCard> ModelOfStore(const CollectionInfo& info, const std::string& location,
                               const std::vector<std::string>& dirs,
                               const std::string& requested = "");

// The path of the segment file of the SQLite store at `store_path` ("photos.db.vectors").
std::string SegmentPath(const std::string& store_path);

}  // namespace nearlabel
