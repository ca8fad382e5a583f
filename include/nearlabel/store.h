// The vector store: one row per image (id, source path, content sha256, metadata JSON,
// embedding) plus collection info (model, checksum, dims, metric). The embedded default is
// one SQLite file; the interface is what a server-backed store (PostgreSQL) implements too.
#pragma once

#include <cstdint>
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
};

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
  // Where this store lives, for messages.
  virtual std::string location() const = 0;
};

// "FIELD=VALUE" (the --within option, e.g. "part=exp1") as a where expression for
// LoadVectors/SelectIds: rows whose label field FIELD equals VALUE. The value is quoted, so
// any text is safe. InvalidArgument without a "=".
Result<std::string> WithinToSql(const std::string& within);

// Opens (in kReadWrite mode, creating) a SQLite store file. A missing file in kReadOnly mode,
// a file that is not a nearlabel store, or one of a newer format is a clear error and the
// file is left untouched.
Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path, Store::Mode mode);

// Opens a store by location; today a SQLite file path.
Result<std::unique_ptr<Store>> OpenStore(const std::string& location, Store::Mode mode);

}  // namespace nearlabel
