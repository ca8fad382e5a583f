// The vector store: one row per image (id, source path, content sha256, metadata JSON,
// embedding) plus collection info (model, checksum, dims, metric). The embedded default is
// one SQLite file; the interface is what a server-backed store (PostgreSQL) implements too.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "nearlabel/status.h"

namespace nearlabel {

struct CollectionInfo {
  std::string model;         // model card name
  std::string model_sha256;  // checksum of the ONNX file the embeddings came from
  int dims = 0;
  std::string metric = "COSINE";
  std::string label_field;  // the field classify/eval predict by default ("label", "quality")
  // The EmbeddingOptions the vectors were made with (EmbeddingOptionsJson); "" in a store
  // made before they existed: the card's preprocessing and nothing else.
  std::string embedding;
  // With the "centre" option: the mean vector subtracted from every stored row (a JSON array
  // of dims numbers, in the setting kCentreSettingKey); "" until the first ingest computed it.
  std::string centre;
};
constexpr const char* kCentreSettingKey = "embedding.centre";
constexpr const char* kCentreRowsSettingKey = "embedding.centre_rows";  // rows it was computed on

// "" when a store holding `stored` can take rows made as `wanted` (same model file, dims and
// embedding options); otherwise what differs, for a Mismatch message about `location`.
std::string CollectionDifference(const CollectionInfo& stored, const CollectionInfo& wanted,
                                 const std::string& location);

struct NewItem {
  std::string source;         // image path as ingested
  std::string sha256;         // content checksum (idempotence key)
  std::string metadata_json;  // a JSON object
  std::vector<float> embedding;
  std::string thumbnail_jpeg;  // a small JPEG for pages and reports ("" = none)
};

struct ItemRecord {
  int64_t id = 0;
  std::string source;
  std::string sha256;
  std::string metadata_json;
  std::vector<float> embedding;
};

struct InsertResult {
  std::vector<int64_t> ids;  // per input item: the new row id, or the existing row's id
  size_t inserted = 0;
  size_t duplicates = 0;  // items whose sha256 was already stored
};

// Rows loaded for search: row-major vectors (size() x dims) with ids and metadata.
struct VectorTable {
  int dims = 0;
  std::vector<int64_t> ids;
  std::vector<std::string> sources;
  std::vector<std::string> metadata;  // JSON text per row
  std::vector<float> vectors;
  // Rows whose embedding failed EmbeddingProblem (NaN, infinity, not unit length): left out
  // of the table so they are never ranked, listed here (id, why) so callers can say so.
  std::vector<std::pair<int64_t, std::string>> damaged;
  size_t size() const { return ids.size(); }
  const float* row(size_t i) const { return vectors.data() + i * static_cast<size_t>(dims); }
};

// One cell of an SQL result.
using SqlValue = std::variant<std::monostate, int64_t, double, std::string, std::vector<uint8_t>>;
struct SqlResult {
  std::vector<std::string> columns;
  std::vector<std::vector<SqlValue>> rows;
  std::string sql;      // the statement text
  int64_t changes = 0;  // rows changed by a write statement
};

class IngestQueue;
class ChangeFeed;

// A Store is used from one thread at a time (open one per thread).
class Store {
 public:
  // kReadOnly and kReadWrite open an existing store (NotFound otherwise); kCreate is
  // kReadWrite that creates a missing store (only ingest creates stores).
  enum class Mode { kReadOnly, kReadWrite, kCreate };
  virtual ~Store() = default;

  // The collection info, or nullopt for a store nothing was ingested into yet.
  virtual Result<std::optional<CollectionInfo>> GetCollection() = 0;
  // Records `info` on an empty store; on an initialised one, fails with Mismatch (and a
  // message saying what differs and what to do) unless model, checksum and dims agree.
  virtual Status EnsureCollection(const CollectionInfo& info) = 0;
  // Inserts all items in one transaction: all or nothing. Items whose sha256 is stored
  // already are skipped (counted as duplicates). Embeddings must have `dims` floats.
  virtual Result<InsertResult> InsertBatch(const std::vector<NewItem>& items) = 0;
  // sha256 of every stored row (to skip work on a resumed ingest).
  virtual Result<std::unordered_set<std::string>> AllSha256() = 0;
  // Rows matching `where_sql` (an SQL boolean expression over items' columns, e.g.
  // "field(metadata,'part') = 'exp1'"; "" for all), ordered by id. The expression runs
  // read-only: anything that would write is refused.
  virtual Result<VectorTable> LoadVectors(const std::string& where_sql) = 0;
  // Ids of the rows matching `where_sql` (as for LoadVectors), ascending.
  virtual Result<std::vector<int64_t>> SelectIds(const std::string& where_sql) = 0;
  // Deletes the rows matching `where_sql` (required: "" is refused) in one transaction and
  // returns their ids. Ids are never reused: a later insert gets an id above every id ever
  // deleted, so a vector index keyed by id can never mistake a new row for a deleted one.
  virtual Result<std::vector<int64_t>> Delete(const std::string& where_sql) = 0;
  // Store-level settings (e.g. the vector index's state): key/value text, "" when unset.
  virtual Result<std::string> GetSetting(const std::string& key) = 0;
  // Writes all `values` in one transaction ("" deletes a key).
  virtual Status PutSettings(const std::vector<std::pair<std::string, std::string>>& values) = 0;
  // Named binary objects kept with the collection (an anomaly model's patch bank). NotFound
  // when `key` has none.
  virtual Result<std::string> GetBlob(const std::string& key) = 0;
  // Writes (replaces) `value` under `key` in one transaction; "" deletes the key.
  virtual Status PutBlob(const std::string& key, const std::string& value) = 0;
  virtual Result<ItemRecord> GetItem(int64_t id) = 0;
  // The JPEG thumbnail kept at ingest (NotFound when the row has none).
  virtual Result<std::string> GetThumbnail(int64_t id) = 0;
  virtual Result<int64_t> Count() = 0;
  // Runs one or more SQL statements; returns one result per statement. In read-only mode a
  // statement that would write fails before it runs (statements before it have run).
  virtual Result<std::vector<SqlResult>> Execute(const std::string& sql) = 0;
  // Creates the reference design's label view (aihub_labels: id, part, quality, category1,
  // category2, source, embedding) if missing.
  virtual Status EnsureAiHubView() = 0;
  // Verifies the store's own bytes (SQLite: PRAGMA integrity_check, which also finds index
  // entries that disagree with their rows; PostgreSQL checks its own pages: OK). Corruption,
  // with what was found and what to do, when the store is damaged. Reads the whole file:
  // commands that write rows call it once before their first write.
  virtual Status CheckIntegrity() = 0;
  // Streams the id and embedding of every row, ascending id, from one snapshot of the table,
  // calling `row` for each (the pointer is valid during the call only); *change_id is the
  // newest change in that snapshot (0 for a store without a change log), so the rows plus
  // every later change are the whole table. Rows whose embedding fails EmbeddingProblem go to
  // *damaged instead. Stops at the first error `row` returns. The default loads every row
  // (LoadVectors) after reading the change id: a row also among the later changes is then
  // seen twice, which catch-up treats as a no-op.
  virtual Status ScanEmbeddings(const std::function<Status(int64_t id, const float* v)>& row,
                                int64_t* change_id,
                                std::vector<std::pair<int64_t, std::string>>* damaged);
  // Replaces every row's embedding with `rewrite`(id, its floats) in one write transaction,
  // together with `settings` (as PutSettings): all or nothing. Each rewritten row is a change
  // (a delete and an insert) for followers. The default: Unsupported.
  virtual Status RewriteEmbeddings(
      const std::function<void(int64_t id, float* v)>& rewrite,
      const std::vector<std::pair<std::string, std::string>>& settings) {
    (void)rewrite;
    (void)settings;
    return Status::Unsupported("store " + location() + " cannot rewrite its embeddings");
  }
  // Where this store lives, for messages (a PostgreSQL URI with its password masked).
  virtual std::string location() const = 0;

  // ---- Shared stores (PostgreSQL). An embedded store has neither. ----
  // The ingest job queue on this store's connection, or nullptr when the store is embedded
  // (one ingest process at a time).
  virtual IngestQueue* ingest_queue() { return nullptr; }
  // The change feed on a connection of its own: PostgreSQL's (LISTEN/NOTIFY) and a format-3
  // SQLite file's (its change log, polled). Unsupported for a format-2 SQLite file.
  virtual Result<std::unique_ptr<ChangeFeed>> OpenChangeFeed() {
    return Status::Unsupported("store " + location() + " has no change feed");
  }
};

// Counts of a dataset's jobs in a shared ingest queue.
struct QueueCounts {
  int64_t pending = 0;  // not done yet (including those a worker holds now)
  int64_t done = 0;
  int64_t failed = 0;
};

// A dataset listing as a job table that many ingest workers drain at once: each worker claims
// a batch of pending images, embeds them, and stores the rows and marks the jobs done in one
// transaction. A worker that dies (or stalls past its lease) has its transaction aborted by
// the database, which releases its claim: every image ends up stored exactly once. Used by one
// thread at a time, like its Store.
class IngestQueue {
 public:
  virtual ~IngestQueue() = default;
  // Adds `relative_paths` as pending jobs of the dataset named `job`; paths already queued
  // keep their state. Returns how many were new. Safe with other workers doing the same.
  virtual Result<size_t> Enqueue(const std::string& job,
                                 const std::vector<std::string>& relative_paths) = 0;
  // Opens a transaction and claims up to `n` pending jobs of `job` that no other worker holds
  // (SELECT ... FOR UPDATE SKIP LOCKED). Empty when none is free now. The claim lasts until
  // Complete or Abandon; a lost connection or a transaction idle longer than the lease
  // (`lease_seconds`) aborts it and the jobs are pending again.
  virtual Result<std::vector<std::string>> Claim(const std::string& job, size_t n,
                                                 int lease_seconds) = 0;
  // In the claim's transaction: inserts `rows` (as Store::InsertBatch), marks `done` done and
  // `failed` (path, reason) failed, and commits. All or nothing; on failure the claim is
  // released and the jobs stay pending.
  virtual Result<InsertResult> Complete(
      const std::string& job, const std::vector<NewItem>& rows,
      const std::vector<std::string>& done,
      const std::vector<std::pair<std::string, std::string>>& failed) = 0;
  // Rolls the claim back: its jobs are pending again.
  virtual void Abandon() = 0;
  virtual Result<QueueCounts> Counts(const std::string& job) = 0;
};

// One entry of a shared store's change sequence: a row inserted or deleted. Change ids
// increase in commit order, so "every change after N" is a complete catch-up.
struct StoreChange {
  int64_t change_id = 0;
  int64_t item_id = 0;
  bool deleted = false;
  // For an insert whose row still exists: the row (else present is false; a later change
  // deletes it).
  bool present = false;
  std::string source;
  std::string metadata;
  std::vector<float> embedding;
};

// Reads a shared store's change sequence and waits for new changes (LISTEN/NOTIFY). Used by
// one thread. A lost connection makes calls fail; the next call reconnects.
class ChangeFeed {
 public:
  virtual ~ChangeFeed() = default;
  // The id of the newest committed change (0 when none): rows loaded after reading it plus
  // every change after it give the complete table.
  virtual Result<int64_t> LastChangeId() = 0;
  // Up to `limit` changes after `change_id`, in order.
  virtual Result<std::vector<StoreChange>> ChangesAfter(int64_t change_id, size_t limit) = 0;
  // Waits up to `timeout_ms` for a notification that changes were committed: true when one
  // came, false on timeout.
  virtual Result<bool> WaitForChanges(int timeout_ms) = 0;
};

// "N stored embeddings are damaged (row 3: why; ...)", the first three named; "" when none.
std::string DamagedRowsSummary(const VectorTable& table);

// One line for stderr when `table` left damaged rows out ("" when none): how many, the first
// few ids with why, that they are never ranked, and to run `nearlabel check`.
std::string DamagedRowsNotice(const VectorTable& table, const std::string& location);

// The directory every stored source shares (CommonDirectory of the sources): the setting
// `source_root` that a SQLite store's InsertBatch widens in the same transaction, else (a
// store written before it existed, a PostgreSQL store) one pass over the sources.
Result<std::string> SourceRoot(Store& store);

// `text` as an SQL string literal ('it''s'), safe to splice into a statement.
std::string SqlStringLiteral(const std::string& text);

// One cell as text: NULL, the number (doubles with 9 significant digits), the string, or
// "<blob N bytes>".
std::string SqlValueText(const SqlValue& v);

// "FIELD=VALUE" (the --within option, e.g. "part=exp1") as a where expression for
// LoadVectors/SelectIds: rows whose label field FIELD equals VALUE. The value is quoted, so
// any text is safe. InvalidArgument without a "=".
Result<std::string> WithinToSql(const std::string& within);

// The rows a query may return, as one where expression: `within` ("FIELD=VALUE", as
// WithinToSql; "" for none) AND `where` (an SQL condition on items; "" for none), each in
// parentheses (the closing one on its own line, so a where ending in an SQL comment cannot
// swallow it). "" when both are empty. The one rule for classify, search, the server, the
// Python module and eval --queries.
Result<std::string> RowFilterSql(const std::string& within, const std::string& where);

// Opens (in kReadWrite mode, creating) a SQLite store file. A missing file in kReadOnly mode,
// a file that is not a nearlabel store, or one of a newer format is a clear error and the
// file is left untouched.
Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path, Store::Mode mode);

// Opens (kCreate: creating the schema, see RunPostgresMigrations) a PostgreSQL store at a
// libpq URI (postgresql://user@host:port/db?...). The password comes from the URI,
// PGPASSFILE or PGPASSWORD and is never printed: location() masks it. A database without the
// nearlabel schema is NotFound unless kCreate; one of a newer schema version is Unsupported.
Result<std::unique_ptr<Store>> OpenPostgresStore(const std::string& uri, Store::Mode mode);

// Creates or upgrades the nearlabel schema of the PostgreSQL database at `uri` (versioned
// migrations, each in one transaction, serialised by an advisory lock so many workers may run
// it at once). Returns the schema version now in place; *applied lists what ran.
Result<int> RunPostgresMigrations(const std::string& uri, std::vector<std::string>* applied);

// `location` for messages: a PostgreSQL URI with its password (user:PASSWORD@ or
// password=...) replaced by ***; a file path as it is.
std::string MaskedLocation(const std::string& location);

// True for "postgresql://..." and "postgres://..." locations.
bool IsPostgresUri(const std::string& location);

// Opens a store by location: a PostgreSQL URI or a SQLite file path.
Result<std::unique_ptr<Store>> OpenStore(const std::string& location, Store::Mode mode);

}  // namespace nearlabel
