// SQLite store. Storage layout (format 3), see ARCHITECTURE.md:
//   collection(key TEXT PRIMARY KEY, value TEXT)   model, model_sha256, dims, metric, ...
//   items(id INTEGER PRIMARY KEY, source TEXT, sha256 TEXT UNIQUE, metadata TEXT (JSON),
//         embedding BLOB (little-endian float32 x dims))
//   thumbnails(id INTEGER PRIMARY KEY (= items.id), jpeg BLOB)   since format 2; a format-1
//         file gains the empty table when it is next opened for writing
//   changes(change_id INTEGER PRIMARY KEY AUTOINCREMENT, item_id, op 'I'|'D')   since format
//         3: every insert and delete of an item (triggers, so `sql --write` is logged too),
//         the change feed that lets every reader catch up with every writer
// PRAGMA application_id marks the file as ours; PRAGMA user_version is the format.
// WAL journal, synchronous=NORMAL (a committed batch survives a killed process; a checkpoint
// with fsync runs when the store is closed after writing).
#include <sqlite3.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <thread>

#include "common/fs.h"
#include "common/json.h"
#include "nearlabel/store.h"
#include "nearlabel/vector.h"
#include "store/vector_functions.h"

namespace nearlabel {
namespace {

constexpr int kApplicationId = 0x4E4C4231;  // "NLB1"
constexpr int kFormatVersion = 3;
// Collection keys: the directory every stored source shares, and "1" once it is kept.
constexpr const char* kSourceRoot = "source_root";
constexpr const char* kSourceRootKept = "source_root.kept";
// Collection key holding the highest id ever deleted (ids are never reused).
constexpr const char* kIdFloorKey = "deleted_id_floor";

const char* const kSchema = R"sql(
CREATE TABLE collection (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE items (
  id        INTEGER PRIMARY KEY,
  source    TEXT NOT NULL,
  sha256    TEXT NOT NULL UNIQUE,
  metadata  TEXT NOT NULL CHECK (json_valid(metadata) AND json_type(metadata) = 'object'),
  embedding BLOB NOT NULL
);
CREATE TABLE thumbnails (
  id   INTEGER PRIMARY KEY,
  jpeg BLOB NOT NULL
);
)sql";

// Format 3: the change log. Triggers, not the store's own code, write it, so rows changed by
// `nearlabel sql --write` or the sqlite3 shell are logged too. An UPDATE of an embedding (or
// an id) is a delete and an insert: readers holding the old vector drop it.
const char* const kChangeLog = R"sql(
CREATE TABLE IF NOT EXISTS changes (
  change_id INTEGER PRIMARY KEY AUTOINCREMENT,
  item_id   INTEGER NOT NULL,
  op        TEXT NOT NULL CHECK (op IN ('I', 'D'))
);
CREATE TRIGGER IF NOT EXISTS items_log_insert AFTER INSERT ON items BEGIN
  INSERT INTO changes(item_id, op) VALUES (new.id, 'I');
END;
CREATE TRIGGER IF NOT EXISTS items_log_delete AFTER DELETE ON items BEGIN
  INSERT INTO changes(item_id, op) VALUES (old.id, 'D');
END;
CREATE TRIGGER IF NOT EXISTS items_log_update AFTER UPDATE OF id, embedding ON items BEGIN
  INSERT INTO changes(item_id, op) VALUES (old.id, 'D');
  INSERT INTO changes(item_id, op) VALUES (new.id, 'I');
END;
INSERT INTO collection(key, value) VALUES ('store_id', lower(hex(randomblob(16))))
  ON CONFLICT(key) DO NOTHING;
PRAGMA user_version = 3;
)sql";

// Format 1 -> 2: thumbnails.
const char* const kUpgradeTo2 = R"sql(
CREATE TABLE IF NOT EXISTS thumbnails (
  id   INTEGER PRIMARY KEY,
  jpeg BLOB NOT NULL
);
PRAGMA user_version = 2;
)sql";

const char* const kAiHubView = R"sql(
CREATE VIEW IF NOT EXISTS aihub_labels AS
SELECT id,
       json_extract(metadata, '$.annotations[0].attributes.part')          AS part,
       json_extract(metadata, '$.annotations[0].attributes.quality')       AS quality,
       json_extract(metadata, '$.annotations[0].attributes.categories[0]') AS category1,
       json_extract(metadata, '$.annotations[0].attributes.categories[1]') AS category2,
       source,
       embedding
FROM items;
)sql";

struct StmtDeleter {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using Stmt = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

class SqliteStore : public Store {
 public:
  SqliteStore(sqlite3* db, std::string path, Mode mode)
      : db_(db), path_(std::move(path)), mode_(mode == Mode::kCreate ? Mode::kReadWrite : mode) {}
  ~SqliteStore() override {
    if (mode_ == Mode::kReadWrite && wrote_) {
      // Fold the WAL into the main file with an fsync, so a finished ingest is durable.
      sqlite3_exec(db_, "PRAGMA wal_checkpoint(TRUNCATE)", nullptr, nullptr, nullptr);
    }
    sqlite3_close_v2(db_);
  }

  // Reads the file's header and creates or upgrades the schema as the mode allows. Idempotent:
  // when another connection holds a lock it needs, it fails with busy() set and can be run
  // again (OpenSqliteStore does).
  Status Init() {
    busy_ = false;
    NL_RETURN_IF_ERROR(Exec("PRAGMA busy_timeout = 10000"));
    NL_RETURN_IF_ERROR(RegisterVectorFunctions(db_));
    // The three values come from one read transaction, so one snapshot: a writer creating the
    // store commits them together, and reads on either side of its commit would disagree.
    int app_id = 0, version = 0, tables = 0;
    Status st = Exec("BEGIN");
    if (st.ok()) st = QueryInt("PRAGMA application_id", &app_id);
    if (st.ok()) st = QueryInt("PRAGMA user_version", &version);
    if (st.ok()) st = QueryInt("SELECT count(*) FROM sqlite_master", &tables);
    Exec(st.ok() ? "COMMIT" : "ROLLBACK");
    if (!st.ok()) {
      if (busy_) return st;
      // The first read tells whether the file is a database at all.
      return Status::Corruption(path_ + " is not a nearlabel store (" + st.message() + ")");
    }
    if (app_id != kApplicationId) {
      if (tables > 0 || app_id != 0) {
        return Status::InvalidArgument(path_ + " is an SQLite database but not a nearlabel store");
      }
      if (mode_ == Mode::kReadOnly) return Status::OK();  // empty: nothing to read
      NL_RETURN_IF_ERROR(Exec("PRAGMA journal_mode = WAL"));
      NL_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
      // Another writer may have created the schema between the check above and this lock
      // (two ingests starting on a new store): look again under the lock.
      Status s = QueryInt("PRAGMA application_id", &app_id);
      if (s.ok() && app_id != kApplicationId) {
        s = Exec(kSchema);
        if (s.ok()) s = Exec(kChangeLog);
        if (s.ok()) s = Exec("PRAGMA application_id = " + std::to_string(kApplicationId));
        if (s.ok()) s = Exec("PRAGMA user_version = " + std::to_string(kFormatVersion));
        version = kFormatVersion;
      } else if (s.ok()) {
        s = QueryInt("PRAGMA user_version", &version);
      }
      if (!s.ok()) {
        Exec("ROLLBACK");
        return s;
      }
      NL_RETURN_IF_ERROR(Exec("COMMIT"));
      app_id = kApplicationId;
      if (version > kFormatVersion) {
        return Status::Unsupported(path_ + " has store format " + std::to_string(version) +
                                   ", newer than this nearlabel reads (" +
                                   std::to_string(kFormatVersion) + "); upgrade nearlabel");
      }
    } else if (version > kFormatVersion) {
      return Status::Unsupported(path_ + " has store format " + std::to_string(version) +
                                 ", newer than this nearlabel reads (" +
                                 std::to_string(kFormatVersion) + "); upgrade nearlabel");
    }
    if (mode_ == Mode::kReadWrite) {
      NL_RETURN_IF_ERROR(Exec("PRAGMA journal_mode = WAL"));
      NL_RETURN_IF_ERROR(Exec("PRAGMA synchronous = NORMAL"));
      if (app_id == kApplicationId && version < 2) {
        NL_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
        Status s = Exec(kUpgradeTo2);
        if (!s.ok()) {
          Exec("ROLLBACK");
          return s.WithContext("upgrading " + path_ + " to store format 2");
        }
        NL_RETURN_IF_ERROR(Exec("COMMIT"));
      }
      if (app_id == kApplicationId && version < 3) {
        NL_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
        Status s = Exec(kChangeLog);
        if (!s.ok()) {
          Exec("ROLLBACK");
          return s.WithContext("upgrading " + path_ + " to store format 3");
        }
        NL_RETURN_IF_ERROR(Exec("COMMIT"));
      }
    }
    int thumbnail_tables = 0, change_tables = 0;
    NL_RETURN_IF_ERROR(
        QueryInt("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'thumbnails'",
                 &thumbnail_tables));
    has_thumbnails_ = thumbnail_tables > 0;
    NL_RETURN_IF_ERROR(
        QueryInt("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'changes'",
                 &change_tables));
    has_changes_ = change_tables > 0;
    initialised_ = true;
    return Status::OK();
  }

  bool busy() const { return busy_; }
  std::string location() const override { return path_; }
  void set_open_target(const std::string& target, int flags) {
    open_target_ = target;
    open_flags_ = flags;
  }

  Result<std::unique_ptr<ChangeFeed>> OpenChangeFeed() override;

  Status ScanEmbeddings(const std::function<Status(int64_t, const float*)>& row, int64_t* change_id,
                        std::vector<std::pair<int64_t, std::string>>* damaged) override {
    *change_id = 0;
    NL_ASSIGN_OR_RETURN(auto info, GetCollection());
    if (!info) return Status::OK();
    const size_t dims = static_cast<size_t>(info->dims);
    // One read transaction: the rows and the change id are one snapshot.
    NL_RETURN_IF_ERROR(Exec("BEGIN"));
    Status st = [&]() -> Status {
      if (has_changes_) {
        NL_ASSIGN_OR_RETURN(Stmt c, Prepare("SELECT coalesce(max(change_id), 0) FROM changes"));
        if (sqlite3_step(c.get()) != SQLITE_ROW) return Error("reading the change log");
        *change_id = sqlite3_column_int64(c.get(), 0);
      }
      NL_ASSIGN_OR_RETURN(Stmt s, Prepare("SELECT id, embedding FROM items ORDER BY id"));
      int rc;
      while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) {
        const int64_t id = sqlite3_column_int64(s.get(), 0);
        const int bytes = sqlite3_column_bytes(s.get(), 1);
        const float* f = static_cast<const float*>(sqlite3_column_blob(s.get(), 1));
        std::string problem = static_cast<size_t>(bytes) != dims * 4
                                  ? "an embedding of " + std::to_string(bytes) + " bytes"
                                  : EmbeddingProblem(f, dims);
        if (!problem.empty()) {
          damaged->emplace_back(id, std::move(problem));
          continue;
        }
        NL_RETURN_IF_ERROR(row(id, f));
      }
      if (rc != SQLITE_DONE) return Error("reading vectors");
      return Status::OK();
    }();
    Exec("COMMIT");
    return st;
  }

  Result<std::optional<CollectionInfo>> GetCollection() override {
    if (!initialised_) return std::optional<CollectionInfo>();
    NL_ASSIGN_OR_RETURN(Stmt s, Prepare("SELECT key, value FROM collection"));
    CollectionInfo info;
    bool any = false;
    int rc;
    while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) {
      std::string key = Text(s.get(), 0), value = Text(s.get(), 1);
      if (key == "model") info.model = value, any = true;
      if (key == "model_sha256") info.model_sha256 = value;
      if (key == "dims") info.dims = std::atoi(value.c_str());
      if (key == "metric") info.metric = value;
      if (key == "label_field") info.label_field = value;
      if (key == "embedding") info.embedding = value;
      if (key == kCentreSettingKey) info.centre = value;
    }
    if (rc != SQLITE_DONE) return Error("reading collection info");
    if (!any) return std::optional<CollectionInfo>();
    return std::optional<CollectionInfo>(info);
  }

  Status EnsureCollection(const CollectionInfo& info) override {
    NL_RETURN_IF_ERROR(RequireWritable());
    NL_ASSIGN_OR_RETURN(auto current, GetCollection());
    if (current) {
      const std::string difference = CollectionDifference(*current, info, path_);
      return difference.empty() ? Status::OK() : Status::Mismatch(difference);
    }
    NL_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    // Another writer may have recorded its info since the read above: check again under the
    // lock, and compare with what it wrote.
    auto again = GetCollection();
    if (!again.ok() || *again) {
      Exec("ROLLBACK");
      if (!again.ok()) return again.status();
      return EnsureCollection(info);
    }
    Status st = Status::OK();
    const std::pair<const char*, std::string> kv[] = {
        {"model", info.model},
        {"model_sha256", info.model_sha256},
        {"dims", std::to_string(info.dims)},
        {"metric", info.metric},
        {"label_field", info.label_field},
        {"embedding", info.embedding},
        {"created_by", "nearlabel " NEARLABEL_VERSION}};
    for (const auto& [k, v] : kv) {
      auto s = Prepare("INSERT INTO collection(key, value) VALUES(?, ?)");
      if (!s.ok()) {
        st = s.status();
        break;
      }
      sqlite3_bind_text(s->get(), 1, k, -1, SQLITE_STATIC);
      sqlite3_bind_text(s->get(), 2, v.c_str(), -1, SQLITE_TRANSIENT);
      if (sqlite3_step(s->get()) != SQLITE_DONE) {
        st = Error("writing collection info");
        break;
      }
    }
    if (!st.ok()) {
      Exec("ROLLBACK");
      return st;
    }
    wrote_ = true;
    return Exec("COMMIT");
  }

  Result<InsertResult> InsertBatch(const std::vector<NewItem>& items) override {
    NL_RETURN_IF_ERROR(RequireWritable());
    NL_ASSIGN_OR_RETURN(auto info, GetCollection());
    if (!info) return Status::InvalidArgument("store " + path_ + " has no collection info yet");
    for (const NewItem& it : items) {
      if (static_cast<int>(it.embedding.size()) != info->dims) {
        return Status::Mismatch("embedding of " + it.source + " has " +
                                std::to_string(it.embedding.size()) + " dims, the store holds " +
                                std::to_string(info->dims));
      }
    }
    InsertResult result;
    NL_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    Status st = InsertAll(items, &result);
    if (!st.ok()) {
      Exec("ROLLBACK");
      return st;
    }
    NL_RETURN_IF_ERROR(Exec("COMMIT"));
    wrote_ = true;
    return result;
  }

  Result<std::unordered_set<std::string>> AllSha256() override {
    std::unordered_set<std::string> out;
    if (!initialised_) return out;
    NL_ASSIGN_OR_RETURN(Stmt s, Prepare("SELECT sha256 FROM items"));
    int rc;
    while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) out.insert(Text(s.get(), 0));
    if (rc != SQLITE_DONE) return Error("reading checksums");
    return out;
  }

  Result<VectorTable> LoadVectors(const std::string& where_sql) override {
    VectorTable t;
    NL_ASSIGN_OR_RETURN(auto info, GetCollection());
    if (!info) return t;
    t.dims = info->dims;
    NL_ASSIGN_OR_RETURN(Stmt s, PrepareWhere("id, source, metadata, embedding", where_sql));
    sqlite3_stmt* raw = s.get();
    int rc;
    while ((rc = sqlite3_step(raw)) == SQLITE_ROW) {
      const void* blob = sqlite3_column_blob(raw, 3);
      const int bytes = sqlite3_column_bytes(raw, 3);
      if (bytes != t.dims * 4) {
        return Status::Corruption("row " + std::to_string(sqlite3_column_int64(raw, 0)) +
                                  " has an embedding of " + std::to_string(bytes) +
                                  " bytes, expected " + std::to_string(t.dims * 4));
      }
      const int64_t id = sqlite3_column_int64(raw, 0);
      const float* f = static_cast<const float*>(blob);
      std::string problem = EmbeddingProblem(f, static_cast<size_t>(t.dims));
      if (!problem.empty()) {
        t.damaged.emplace_back(id, std::move(problem));
        continue;
      }
      t.ids.push_back(id);
      t.sources.push_back(Text(raw, 1));
      t.metadata.push_back(Text(raw, 2));
      t.vectors.insert(t.vectors.end(), f, f + t.dims);
    }
    if (rc != SQLITE_DONE) return Error("reading vectors");
    return t;
  }

  Result<std::vector<int64_t>> SelectIds(const std::string& where_sql) override {
    std::vector<int64_t> ids;
    if (!initialised_) return ids;
    NL_ASSIGN_OR_RETURN(Stmt s, PrepareWhere("id", where_sql));
    int rc;
    while ((rc = sqlite3_step(s.get())) == SQLITE_ROW)
      ids.push_back(sqlite3_column_int64(s.get(), 0));
    if (rc != SQLITE_DONE) return Error("selecting rows");
    return ids;
  }

  Result<std::vector<int64_t>> Delete(const std::string& where_sql) override {
    NL_RETURN_IF_ERROR(RequireWritable());
    if (where_sql.empty()) return Status::InvalidArgument("delete needs a --where condition");
    NL_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    auto ids = SelectIds(where_sql);
    Status st = ids.status();
    if (st.ok() && !ids->empty()) st = DeleteIds(*ids);
    if (!st.ok()) {
      Exec("ROLLBACK");
      return st;
    }
    NL_RETURN_IF_ERROR(Exec("COMMIT"));
    wrote_ = true;
    return ids;
  }

  Result<std::string> GetSetting(const std::string& key) override {
    if (!initialised_) return std::string();
    NL_ASSIGN_OR_RETURN(Stmt s, Prepare("SELECT value FROM collection WHERE key = ?"));
    sqlite3_bind_text(s.get(), 1, key.c_str(), -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s.get());
    if (rc == SQLITE_DONE) return std::string();
    if (rc != SQLITE_ROW) return Error("reading setting " + key);
    return Text(s.get(), 0);
  }

  Status PutSettings(const std::vector<std::pair<std::string, std::string>>& values) override {
    return InWriteTransaction([&] { return PutAll(values); });
  }

  Status RewriteEmbeddings(
      const std::function<void(int64_t, float*)>& rewrite,
      const std::vector<std::pair<std::string, std::string>>& settings) override {
    NL_ASSIGN_OR_RETURN(auto info, GetCollection());
    if (!info) return PutSettings(settings);
    const size_t dims = static_cast<size_t>(info->dims);
    return InWriteTransaction([&]() -> Status {
      NL_ASSIGN_OR_RETURN(Stmt read, Prepare("SELECT id, embedding FROM items ORDER BY id"));
      NL_ASSIGN_OR_RETURN(Stmt write, Prepare("UPDATE items SET embedding = ? WHERE id = ?"));
      std::vector<float> v(dims);
      int rc;
      while ((rc = sqlite3_step(read.get())) == SQLITE_ROW) {
        const int64_t id = sqlite3_column_int64(read.get(), 0);
        if (static_cast<size_t>(sqlite3_column_bytes(read.get(), 1)) != dims * 4) continue;
        std::memcpy(v.data(), sqlite3_column_blob(read.get(), 1), dims * 4);
        if (!EmbeddingProblem(v.data(), dims).empty()) continue;  // damaged rows stay as they are
        rewrite(id, v.data());
        sqlite3_reset(write.get());
        sqlite3_bind_blob(write.get(), 1, v.data(), static_cast<int>(dims * 4), SQLITE_TRANSIENT);
        sqlite3_bind_int64(write.get(), 2, id);
        if (sqlite3_step(write.get()) != SQLITE_DONE)
          return Error("rewriting row " + std::to_string(id));
      }
      if (rc != SQLITE_DONE) return Error("reading vectors");
      return PutAll(settings);
    });
  }

  // Runs `body` in one BEGIN IMMEDIATE transaction: committed when it returns OK, rolled back
  // (and its error returned) otherwise.
  template <typename Body>
  Status InWriteTransaction(const Body& body) {
    NL_RETURN_IF_ERROR(RequireWritable());
    NL_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    Status st = body();
    if (!st.ok()) {
      Exec("ROLLBACK");
      return st;
    }
    NL_RETURN_IF_ERROR(Exec("COMMIT"));
    wrote_ = true;
    return Status::OK();
  }

  // Blobs live in their own table, created by the first PutBlob: stores without one read as
  // having no blobs, and older nearlabel builds ignore the table (no format change).
  Result<std::string> GetBlob(const std::string& key) override {
    int tables = 0;
    if (initialised_) {
      NL_RETURN_IF_ERROR(QueryInt(
          "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'blobs'", &tables));
    }
    if (tables == 0) return Status::NotFound("store " + path_ + " has no " + key);
    NL_ASSIGN_OR_RETURN(Stmt s, Prepare("SELECT value FROM blobs WHERE key = ?"));
    sqlite3_bind_text(s.get(), 1, key.c_str(), -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s.get());
    if (rc == SQLITE_DONE) return Status::NotFound("store " + path_ + " has no " + key);
    if (rc != SQLITE_ROW) return Error("reading " + key);
    const void* data = sqlite3_column_blob(s.get(), 0);
    return data ? std::string(static_cast<const char*>(data),
                              static_cast<size_t>(sqlite3_column_bytes(s.get(), 0)))
                : std::string();
  }

  Status PutBlob(const std::string& key, const std::string& value) override {
    return InWriteTransaction([&]() -> Status {
      NL_RETURN_IF_ERROR(
          Exec("CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, value BLOB NOT NULL)"));
      NL_ASSIGN_OR_RETURN(
          Stmt st,
          Prepare(value.empty() ? "DELETE FROM blobs WHERE key = ?"
                                : "INSERT OR REPLACE INTO blobs (key, value) VALUES (?, ?)"));
      sqlite3_bind_text(st.get(), 1, key.c_str(), -1, SQLITE_TRANSIENT);
      if (!value.empty()) {
        sqlite3_bind_blob64(st.get(), 2, value.data(), value.size(), SQLITE_STATIC);
      }
      if (sqlite3_step(st.get()) != SQLITE_DONE) return Error("writing " + key);
      return Status::OK();
    });
  }

  Result<ItemRecord> GetItem(int64_t id) override {
    if (!initialised_) return Status::NotFound("no item " + std::to_string(id));
    NL_ASSIGN_OR_RETURN(
        Stmt s, Prepare("SELECT source, sha256, metadata, embedding FROM items WHERE id = ?"));
    sqlite3_bind_int64(s.get(), 1, id);
    int rc = sqlite3_step(s.get());
    if (rc == SQLITE_DONE) return Status::NotFound("no item " + std::to_string(id));
    if (rc != SQLITE_ROW) return Error("reading item");
    ItemRecord r;
    r.id = id;
    r.source = Text(s.get(), 0);
    r.sha256 = Text(s.get(), 1);
    r.metadata_json = Text(s.get(), 2);
    NL_ASSIGN_OR_RETURN(r.embedding, VectorFromBlob(sqlite3_column_blob(s.get(), 3),
                                                    sqlite3_column_bytes(s.get(), 3)));
    return r;
  }

  Status CheckIntegrity() override {
    NL_ASSIGN_OR_RETURN(Stmt s, Prepare("PRAGMA integrity_check(10)"));
    std::string found;
    int rc;
    while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) {
      const std::string line = Text(s.get(), 0);
      if (line != "ok") found += (found.empty() ? "" : "; ") + line;
    }
    if (rc != SQLITE_DONE) return Error("checking the file");
    if (found.empty()) return Status::OK();
    return Status::Corruption(path_ + ": integrity_check: " + found +
                              " (the store file is damaged; nothing was changed. Restore it "
                              "from a backup; `nearlabel check STORE` shows what else it finds)");
  }

  Result<std::string> GetThumbnail(int64_t id) override {
    if (!initialised_ || !has_thumbnails_) {
      return Status::NotFound("no thumbnail for item " + std::to_string(id));
    }
    NL_ASSIGN_OR_RETURN(Stmt s, Prepare("SELECT jpeg FROM thumbnails WHERE id = ?"));
    sqlite3_bind_int64(s.get(), 1, id);
    const int rc = sqlite3_step(s.get());
    if (rc == SQLITE_DONE) return Status::NotFound("no thumbnail for item " + std::to_string(id));
    if (rc != SQLITE_ROW) return Error("reading thumbnail");
    const char* data = static_cast<const char*>(sqlite3_column_blob(s.get(), 0));
    return std::string(data ? data : "", static_cast<size_t>(sqlite3_column_bytes(s.get(), 0)));
  }

  Result<int64_t> Count() override {
    if (!initialised_) return int64_t{0};
    int n = 0;
    NL_RETURN_IF_ERROR(QueryInt("SELECT count(*) FROM items", &n));
    return int64_t{n};
  }

  Result<std::vector<SqlResult>> Execute(const std::string& sql) override {
    std::vector<SqlResult> results;
    const char* p = sql.c_str();
    while (p && *p) {
      sqlite3_stmt* raw = nullptr;
      const char* tail = nullptr;
      if (sqlite3_prepare_v2(db_, p, -1, &raw, &tail) != SQLITE_OK) {
        return Status::InvalidArgument(sqlite3_errmsg(db_));
      }
      if (raw == nullptr) {  // whitespace or a comment
        p = tail;
        continue;
      }
      Stmt s(raw);
      SqlResult r;
      r.sql.assign(p, tail ? static_cast<size_t>(tail - p) : std::string::npos);
      p = tail;
      if (mode_ == Mode::kReadOnly && !sqlite3_stmt_readonly(raw)) {
        return Status::InvalidArgument(
            "the store is open read-only and this statement writes "
            "(pass --write to allow it): " +
            r.sql);
      }
      const int ncol = sqlite3_column_count(raw);
      for (int c = 0; c < ncol; ++c) r.columns.push_back(sqlite3_column_name(raw, c));
      int rc;
      while ((rc = sqlite3_step(raw)) == SQLITE_ROW) {
        std::vector<SqlValue> row;
        for (int c = 0; c < ncol; ++c) {
          switch (sqlite3_column_type(raw, c)) {
            case SQLITE_INTEGER:
              row.emplace_back(int64_t{sqlite3_column_int64(raw, c)});
              break;
            case SQLITE_FLOAT:
              row.emplace_back(sqlite3_column_double(raw, c));
              break;
            case SQLITE_TEXT:
              row.emplace_back(Text(raw, c));
              break;
            case SQLITE_BLOB: {
              auto b = static_cast<const uint8_t*>(sqlite3_column_blob(raw, c));
              row.emplace_back(std::vector<uint8_t>(b, b + sqlite3_column_bytes(raw, c)));
              break;
            }
            default:
              row.emplace_back(std::monostate{});
          }
        }
        r.rows.push_back(std::move(row));
      }
      if (rc != SQLITE_DONE) return Status::InvalidArgument(sqlite3_errmsg(db_));
      r.changes = sqlite3_stmt_readonly(raw) ? 0 : sqlite3_changes64(db_);
      if (!sqlite3_stmt_readonly(raw)) wrote_ = true;
      results.push_back(std::move(r));
    }
    return results;
  }

  Status EnsureAiHubView() override {
    NL_RETURN_IF_ERROR(RequireWritable());
    wrote_ = true;
    return Exec(kAiHubView);
  }

 private:
  // Prepares "SELECT <columns> FROM items [WHERE (<where_sql>)] ORDER BY id", refusing an
  // expression that is not a single read-only one (so --where can never write).
  Result<Stmt> PrepareWhere(const std::string& columns, const std::string& where_sql) {
    std::string sql = "SELECT " + columns + " FROM items";
    if (!where_sql.empty()) sql += " WHERE (" + where_sql + "\n)";
    sql += " ORDER BY id";
    sqlite3_stmt* raw = nullptr;
    const char* tail = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &raw, &tail) != SQLITE_OK) {
      return Status::InvalidArgument("bad --where expression: " + std::string(sqlite3_errmsg(db_)));
    }
    Stmt s(raw);
    while (tail && *tail && std::isspace(static_cast<unsigned char>(*tail))) ++tail;
    if ((tail && *tail) || !sqlite3_stmt_readonly(raw)) {
      return Status::InvalidArgument("--where must be a single read-only expression");
    }
    return s;
  }

  // Within a transaction: deletes `ids` and raises the id floor above them.
  Status DeleteIds(const std::vector<int64_t>& ids) {
    NL_ASSIGN_OR_RETURN(Stmt del, Prepare("DELETE FROM items WHERE id = ?"));
    NL_ASSIGN_OR_RETURN(Stmt del_thumb, Prepare("DELETE FROM thumbnails WHERE id = ?"));
    for (int64_t id : ids) {
      for (sqlite3_stmt* s : {del.get(), del_thumb.get()}) {
        sqlite3_reset(s);
        sqlite3_bind_int64(s, 1, id);
        if (sqlite3_step(s) != SQLITE_DONE) return Error("deleting row " + std::to_string(id));
      }
    }
    NL_ASSIGN_OR_RETURN(std::string floor, GetSetting(kIdFloorKey));
    int64_t highest = std::max<int64_t>(floor.empty() ? 0 : std::stoll(floor), ids.back());
    return PutAll({{kIdFloorKey, std::to_string(highest)}});
  }

  Status PutAll(const std::vector<std::pair<std::string, std::string>>& values) {
    NL_ASSIGN_OR_RETURN(Stmt put,
                        Prepare("INSERT OR REPLACE INTO collection(key, value) VALUES(?, ?)"));
    NL_ASSIGN_OR_RETURN(Stmt del, Prepare("DELETE FROM collection WHERE key = ?"));
    for (const auto& [k, v] : values) {
      sqlite3_stmt* s = v.empty() ? del.get() : put.get();
      sqlite3_reset(s);
      sqlite3_bind_text(s, 1, k.c_str(), -1, SQLITE_TRANSIENT);
      if (!v.empty()) sqlite3_bind_text(s, 2, v.c_str(), -1, SQLITE_TRANSIENT);
      if (sqlite3_step(s) != SQLITE_DONE) return Error("writing setting " + k);
    }
    return Status::OK();
  }

  Status InsertAll(const std::vector<NewItem>& items, InsertResult* result) {
    // Explicit ids above both the highest row and the highest id ever deleted: SQLite would
    // otherwise reuse the id of a deleted last row.
    NL_ASSIGN_OR_RETURN(std::string floor, GetSetting(kIdFloorKey));
    int64_t next_id = 0;
    {
      NL_ASSIGN_OR_RETURN(Stmt mx, Prepare("SELECT coalesce(max(id), 0) FROM items"));
      if (sqlite3_step(mx.get()) != SQLITE_ROW) return Error("reading the highest id");
      next_id = std::max<int64_t>(sqlite3_column_int64(mx.get(), 0),
                                  floor.empty() ? 0 : std::stoll(floor)) +
                1;
    }
    const int64_t first_id = next_id;
    NL_ASSIGN_OR_RETURN(Stmt ins,
                        Prepare("INSERT INTO items(id, source, sha256, metadata, embedding) "
                                "VALUES(?,?,?,?,?) ON CONFLICT(sha256) DO NOTHING"));
    NL_ASSIGN_OR_RETURN(Stmt find, Prepare("SELECT id FROM items WHERE sha256 = ?"));
    NL_ASSIGN_OR_RETURN(Stmt thumb,
                        Prepare("INSERT OR REPLACE INTO thumbnails(id, jpeg) VALUES(?, ?)"));
    for (const NewItem& it : items) {
      sqlite3_reset(ins.get());
      sqlite3_bind_int64(ins.get(), 1, next_id);
      sqlite3_bind_text(ins.get(), 2, it.source.c_str(), -1, SQLITE_STATIC);
      sqlite3_bind_text(ins.get(), 3, it.sha256.c_str(), -1, SQLITE_STATIC);
      sqlite3_bind_text(ins.get(), 4, it.metadata_json.c_str(), -1, SQLITE_STATIC);
      sqlite3_bind_blob(ins.get(), 5, it.embedding.data(),
                        static_cast<int>(it.embedding.size() * sizeof(float)), SQLITE_STATIC);
      if (sqlite3_step(ins.get()) != SQLITE_DONE) return Error("inserting " + it.source);
      if (sqlite3_changes(db_) == 1) {
        if (!it.thumbnail_jpeg.empty()) {
          sqlite3_reset(thumb.get());
          sqlite3_bind_int64(thumb.get(), 1, next_id);
          sqlite3_bind_blob(thumb.get(), 2, it.thumbnail_jpeg.data(),
                            static_cast<int>(it.thumbnail_jpeg.size()), SQLITE_STATIC);
          if (sqlite3_step(thumb.get()) != SQLITE_DONE) {
            return Error("storing the thumbnail of " + it.source);
          }
        }
        result->ids.push_back(next_id++);
        ++result->inserted;
        continue;
      }
      sqlite3_reset(find.get());
      sqlite3_bind_text(find.get(), 1, it.sha256.c_str(), -1, SQLITE_STATIC);
      if (sqlite3_step(find.get()) != SQLITE_ROW) return Error("looking up " + it.sha256);
      result->ids.push_back(sqlite3_column_int64(find.get(), 0));
      ++result->duplicates;
    }
    std::vector<std::string> added;
    for (size_t i = 0; i < items.size(); ++i) {
      if (result->ids[i] >= first_id) added.push_back(items[i].source);
    }
    return added.empty() ? Status::OK() : WidenSourceRoot(added);
  }

  // In the insert's transaction: `source_root` (see SourceRoot) widened to cover `added`, so
  // every stored row is under it. The first time, the rows already stored are read once.
  Status WidenSourceRoot(const std::vector<std::string>& added) {
    NL_ASSIGN_OR_RETURN(std::string kept, GetSetting(kSourceRootKept));
    NL_ASSIGN_OR_RETURN(std::string root, GetSetting(kSourceRoot));
    std::vector<std::string> all = added;
    if (kept == "1") {
      if (!root.empty()) all.push_back(root + "x");  // a file in that directory
    } else {
      NL_ASSIGN_OR_RETURN(Stmt ends, Prepare("SELECT min(source), max(source) FROM items WHERE "
                                             "source LIKE '/%'"));
      if (sqlite3_step(ends.get()) != SQLITE_ROW) return Error("reading sources");
      for (int col = 0; col < 2; ++col) {
        if (sqlite3_column_type(ends.get(), col) == SQLITE_TEXT)
          all.push_back(Text(ends.get(), col));
      }
    }
    const std::string common = CommonDirectory(all);
    if (kept == "1" && common == root) return Status::OK();
    return PutAll({{kSourceRoot, common}, {kSourceRootKept, "1"}});
  }

  Status RequireWritable() const {
    if (mode_ != Mode::kReadWrite)
      return Status::InvalidArgument("store " + path_ + " is open read-only");
    return Status::OK();
  }

  Status Exec(const std::string& sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : sqlite3_errmsg(db_);
      sqlite3_free(err);
      return ErrorFromCode(sqlite3_extended_errcode(db_), msg);
    }
    return Status::OK();
  }

  Status QueryInt(const std::string& sql, int* out) {
    NL_ASSIGN_OR_RETURN(Stmt s, Prepare(sql));
    int rc = sqlite3_step(s.get());
    if (rc != SQLITE_ROW) return Error(sql);
    *out = sqlite3_column_int(s.get(), 0);
    return Status::OK();
  }

  Result<Stmt> Prepare(const std::string& sql) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) != SQLITE_OK) {
      return ErrorFromCode(sqlite3_extended_errcode(db_), sqlite3_errmsg(db_));
    }
    return Stmt(s);
  }

  Status Error(const std::string& what) {
    return ErrorFromCode(sqlite3_extended_errcode(db_), what + ": " + sqlite3_errmsg(db_));
  }

  Status ErrorFromCode(int code, const std::string& msg) const {
    if ((code & 0xff) == SQLITE_BUSY || (code & 0xff) == SQLITE_LOCKED) busy_ = true;
    switch (code & 0xff) {
      case SQLITE_NOTADB:
      case SQLITE_CORRUPT:
        return Status::Corruption(path_ + ": " + msg +
                                  " (the store file is damaged; nothing was changed. Restore it "
                                  "from a backup; `nearlabel sql STORE 'PRAGMA integrity_check'` "
                                  "shows the damage)");
      case SQLITE_FULL:
        return Status::IOError(path_ + ": " + msg +
                               " (the transaction was rolled back; free space and run again)");
      case SQLITE_IOERR: {
        // The OS error says what happened (no space, a file size limit, a vanished disk).
        const int err = sqlite3_system_errno(db_);
        if (err == ENOSPC || err == EFBIG || err == EDQUOT) {
          return Status::IOError(path_ + ": cannot write: " + std::strerror(err) +
                                 " (the transaction was rolled back; free space and run again)");
        }
        if (code == SQLITE_IOERR_WRITE || code == SQLITE_IOERR_FSYNC ||
            code == SQLITE_IOERR_TRUNCATE || code == SQLITE_IOERR_SHMSIZE) {
          return Status::IOError(path_ + ": cannot write (" + msg +
                                 "): the disk is full, a file size limit was hit or the disk "
                                 "went away; the transaction was rolled back");
        }
        return Status::IOError(path_ + ": " + msg +
                               (err ? std::string(" (") + std::strerror(err) + ")" : ""));
      }
      case SQLITE_CANTOPEN:
        return Status::IOError(path_ + ": " + msg);
      case SQLITE_BUSY:
      case SQLITE_LOCKED:
        return Status::IOError(path_ + " is locked by another writer (" + msg + ")");
      case SQLITE_READONLY:
        return Status::IOError(path_ + " is read-only: " + msg);
      default:
        return Status::Internal(path_ + ": " + msg);
    }
  }

  static std::string Text(sqlite3_stmt* s, int col) {
    const unsigned char* t = sqlite3_column_text(s, col);
    return t ? std::string(reinterpret_cast<const char*>(t),
                           static_cast<size_t>(sqlite3_column_bytes(s, col)))
             : std::string();
  }

  sqlite3* db_;
  std::string path_;
  Mode mode_;
  bool initialised_ = false;
  bool wrote_ = false;
  mutable bool busy_ = false;    // the last failure was another connection's lock
  bool has_thumbnails_ = false;  // format 2, or a format-1 file upgraded
  bool has_changes_ = false;     // format 3: the change log exists
  std::string open_target_;      // what sqlite3_open_v2 was given (a path or immutable URI)
  int open_flags_ = 0;
};

// The change log of a format-3 store, read on a connection of its own. SQLite has no
// notifications: WaitForChanges polls PRAGMA data_version, which changes when another
// connection commits (a read of one page header, no lock held between polls).
class SqliteChangeFeed : public ChangeFeed {
 public:
  SqliteChangeFeed(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  ~SqliteChangeFeed() override { sqlite3_close_v2(db_); }

  Result<int64_t> LastChangeId() override {
    NL_ASSIGN_OR_RETURN(Stmt s, Prepare("SELECT coalesce(max(change_id), 0) FROM changes"));
    if (sqlite3_step(s.get()) != SQLITE_ROW) return Error("reading the change log");
    return static_cast<int64_t>(sqlite3_column_int64(s.get(), 0));
  }

  Result<std::vector<StoreChange>> ChangesAfter(int64_t change_id, size_t limit) override {
    NL_ASSIGN_OR_RETURN(
        Stmt s, Prepare("SELECT c.change_id, c.item_id, c.op, i.id IS NOT NULL, i.source, "
                        "i.metadata, i.embedding FROM changes c LEFT JOIN items i ON c.op = 'I' "
                        "AND i.id = c.item_id WHERE c.change_id > ? ORDER BY c.change_id LIMIT ?"));
    sqlite3_bind_int64(s.get(), 1, change_id);
    sqlite3_bind_int64(s.get(), 2, static_cast<sqlite3_int64>(std::min<size_t>(limit, INT64_MAX)));
    std::vector<StoreChange> out;
    int rc;
    while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) {
      StoreChange c;
      c.change_id = sqlite3_column_int64(s.get(), 0);
      c.item_id = sqlite3_column_int64(s.get(), 1);
      c.deleted = sqlite3_column_text(s.get(), 2)[0] == 'D';
      c.present = sqlite3_column_int(s.get(), 3) != 0;
      if (c.present) {
        auto text = [&](int col) {
          const unsigned char* t = sqlite3_column_text(s.get(), col);
          return t ? std::string(reinterpret_cast<const char*>(t),
                                 static_cast<size_t>(sqlite3_column_bytes(s.get(), col)))
                   : std::string();
        };
        c.source = text(4);
        c.metadata = text(5);
        NL_ASSIGN_OR_RETURN(c.embedding, VectorFromBlob(sqlite3_column_blob(s.get(), 6),
                                                        sqlite3_column_bytes(s.get(), 6)));
      }
      out.push_back(std::move(c));
    }
    if (rc != SQLITE_DONE) return Error("reading the change log");
    return out;
  }

  Result<bool> WaitForChanges(int timeout_ms) override {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    NL_ASSIGN_OR_RETURN(int64_t start, DataVersion());
    if (last_version_ >= 0 && start != last_version_) {
      last_version_ = start;
      return true;
    }
    last_version_ = start;
    while (std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      NL_ASSIGN_OR_RETURN(int64_t v, DataVersion());
      if (v != last_version_) {
        last_version_ = v;
        return true;
      }
    }
    return false;
  }

 private:
  Result<int64_t> DataVersion() {
    NL_ASSIGN_OR_RETURN(Stmt s, Prepare("PRAGMA data_version"));
    if (sqlite3_step(s.get()) != SQLITE_ROW) return Error("PRAGMA data_version");
    return static_cast<int64_t>(sqlite3_column_int64(s.get(), 0));
  }
  Result<Stmt> Prepare(const std::string& sql) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) != SQLITE_OK) return Error(sql);
    return Stmt(s);
  }
  Status Error(const std::string& what) {
    return Status::IOError(path_ + ": " + what + ": " + sqlite3_errmsg(db_));
  }
  sqlite3* db_;
  std::string path_;
  int64_t last_version_ = -1;
};

Result<std::unique_ptr<ChangeFeed>> SqliteStore::OpenChangeFeed() {
  if (!has_changes_) {
    return Status::Unsupported("store " + path_ +
                               " has no change log (store format 2; any command that writes "
                               "upgrades it to format 3)");
  }
  sqlite3* db = nullptr;
  const int flags = (open_flags_ & SQLITE_OPEN_URI) | SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(open_target_.c_str(), &db, flags, nullptr) != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close_v2(db);
    return Status::IOError("cannot open store " + path_ + " to follow its changes: " + msg);
  }
  sqlite3_busy_timeout(db, 10000);
  return std::unique_ptr<ChangeFeed>(std::make_unique<SqliteChangeFeed>(db, path_));
}

}  // namespace

std::string SqlStringLiteral(const std::string& text) {
  std::string q = "'";
  for (char c : text) q += c == '\'' ? std::string("''") : std::string(1, c);
  return q + "'";
}

Status Store::ScanEmbeddings(const std::function<Status(int64_t, const float*)>& row,
                             int64_t* change_id,
                             std::vector<std::pair<int64_t, std::string>>* damaged) {
  *change_id = 0;
  auto feed = OpenChangeFeed();
  if (feed.ok()) {
    NL_ASSIGN_OR_RETURN(*change_id, (*feed)->LastChangeId());
  }
  NL_ASSIGN_OR_RETURN(VectorTable t, LoadVectors(""));
  damaged->insert(damaged->end(), t.damaged.begin(), t.damaged.end());
  for (size_t i = 0; i < t.size(); ++i) NL_RETURN_IF_ERROR(row(t.ids[i], t.row(i)));
  return Status::OK();
}

Result<std::string> SourceRoot(Store& store) {
  NL_ASSIGN_OR_RETURN(std::string root, store.GetSetting("source_root"));
  NL_ASSIGN_OR_RETURN(std::string known, store.GetSetting("source_root.kept"));
  if (known == "1") return root;
  // The common prefix of the smallest and the largest source is every source's.
  NL_ASSIGN_OR_RETURN(auto r, store.Execute("SELECT min(source), max(source) FROM items "
                                            "WHERE source LIKE '/%'"));
  std::vector<std::string> ends;
  for (const SqlValue& v : r.front().rows.front()) {
    if (std::holds_alternative<std::string>(v)) ends.push_back(std::get<std::string>(v));
  }
  return CommonDirectory(ends);
}

std::string DamagedRowsSummary(const VectorTable& table) {
  if (table.damaged.empty()) return "";
  std::string list;
  for (size_t i = 0; i < table.damaged.size() && i < 3; ++i) {
    list += (i ? "; " : "") + std::string("row ") + std::to_string(table.damaged[i].first) + ": " +
            table.damaged[i].second;
  }
  if (table.damaged.size() > 3) list += "; ...";
  return std::to_string(table.damaged.size()) + " stored embedding" +
         (table.damaged.size() == 1 ? " is" : "s are") + " damaged (" + list + ")";
}

std::string CollectionDifference(const CollectionInfo& stored, const CollectionInfo& wanted,
                                 const std::string& location) {
  if (stored.model != wanted.model || stored.model_sha256 != wanted.model_sha256 ||
      stored.dims != wanted.dims) {
    return "store " + location + " holds embeddings of model '" + stored.model + "' (" +
           std::to_string(stored.dims) + "-d, sha256 " + stored.model_sha256.substr(0, 12) +
           "...), not of '" + wanted.model + "' (" + std::to_string(wanted.dims) + "-d, sha256 " +
           wanted.model_sha256.substr(0, 12) + "...): use --model " + stored.model +
           " or a new store";
  }
  if (stored.embedding != wanted.embedding) {
    return "store " + location + " holds embeddings made with the options " +
           (stored.embedding.empty() ? "of a store from before embedding options (none)"
                                     : stored.embedding) +
           ", not " + (wanted.embedding.empty() ? "none" : wanted.embedding) +
           ": vectors made differently are not comparable; leave the options out (the store's "
           "are used) or use a new store";
  }
  return "";
}

std::string DamagedRowsNotice(const VectorTable& table, const std::string& location) {
  if (table.damaged.empty()) return "";
  return DamagedRowsSummary(table) + "; left out, never ranked. Run `nearlabel check " +
         MaskedLocation(location) + "` for the whole store";
}

std::string SqlValueText(const SqlValue& v) {
  if (std::holds_alternative<std::monostate>(v)) return "NULL";
  if (auto* i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (auto* d = std::get_if<double>(&v)) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.9g", *d);
    return buf;
  }
  if (auto* s = std::get_if<std::string>(&v)) return *s;
  return "<blob " + std::to_string(std::get<std::vector<uint8_t>>(v).size()) + " bytes>";
}

Result<std::string> RowFilterSql(const std::string& within, const std::string& where) {
  std::string sql;
  if (!within.empty()) {
    NL_ASSIGN_OR_RETURN(std::string w, WithinToSql(within));
    sql = "(" + w + ")";
  }
  if (!where.empty()) sql += (sql.empty() ? "(" : " AND (") + where + "\n)";
  return sql;
}

Result<std::string> WithinToSql(const std::string& within) {
  auto eq = within.find('=');
  if (eq == std::string::npos || eq == 0) {
    return Status::InvalidArgument("--within wants FIELD=VALUE, e.g. --within part=exp1");
  }
  // Labels are JSON strings: UTF-8 without NUL bytes. A value that is not could match no
  // row, and a NUL would end the SQL text early, so it is refused here.
  if (!IsJsonText(within)) {
    return Status::InvalidArgument(
        "--within FIELD=VALUE must be UTF-8 text without NUL bytes (labels are JSON strings)");
  }
  return "field(metadata, " + SqlStringLiteral(within.substr(0, eq)) +
         ") = " + SqlStringLiteral(within.substr(eq + 1));
}

namespace {

// The store as an immutable SQLite URI: read without -shm/-wal files or locks, which is
// right only while nothing can change the file, as on a read-only filesystem. A -wal file
// holding commits not yet copied into the store would be ignored, so that is refused.
Result<std::string> ImmutableUri(const std::string& path) {
  std::error_code ec;
  const auto wal = std::filesystem::file_size(path + "-wal", ec);
  if (!ec && wal > 0) {
    return Status::Unsupported(
        path + " is on a read-only filesystem and its -wal file holds " + std::to_string(wal) +
        " bytes of commits not yet in the store file, which a read-only open cannot apply; "
        "copy the store and its -wal file to a writable place and open it there");
  }
  std::string uri = "file:";
  const std::string abs = std::filesystem::absolute(path, ec).string();
  for (unsigned char c : ec ? path : abs) {
    if (std::isalnum(c) || std::strchr("/-_.~", c)) {
      uri += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      uri += buf;
    }
  }
  return uri + "?immutable=1";
}

}  // namespace

Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path, Store::Mode mode) {
  std::error_code ec;
  if (mode != Store::Mode::kCreate && !std::filesystem::exists(path, ec)) {
    return Status::NotFound("no store at " + path + " (create it with `nearlabel ingest`)");
  }
  if (std::filesystem::is_directory(path, ec)) {
    return Status::InvalidArgument(path + " is a directory, not a store file");
  }
  int flags = mode == Store::Mode::kReadOnly ? SQLITE_OPEN_READONLY
                                             : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  std::string target = path;
  if (mode == Store::Mode::kReadOnly && !DirectoryWritable(path)) {
    NL_ASSIGN_OR_RETURN(target, ImmutableUri(path));
    flags |= SQLITE_OPEN_URI;
  }
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(target.c_str(), &db, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close_v2(db);
    return Status::IOError("cannot open store " + path + ": " + msg);
  }
  auto store = std::make_unique<SqliteStore>(db, path, mode);
  store->set_open_target(target, flags);
  // SQLite's busy timeout does not cover every lock an opening connection meets (switching a
  // new file to WAL while another process opens it returns SQLITE_BUSY at once): two ingests
  // starting on a new store retry the whole opening for as long as the busy timeout.
  const auto start = std::chrono::steady_clock::now();
  for (int attempt = 1;; ++attempt) {
    Status st = store->Init();
    if (st.ok()) break;
    if (!store->busy() || std::chrono::steady_clock::now() - start > std::chrono::seconds(10)) {
      return st;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(100, 5 * attempt)));
  }
  return std::unique_ptr<Store>(std::move(store));
}

bool IsPostgresUri(const std::string& location) {
  return location.rfind("postgresql://", 0) == 0 || location.rfind("postgres://", 0) == 0;
}

Result<std::unique_ptr<Store>> OpenStore(const std::string& location, Store::Mode mode) {
  if (IsPostgresUri(location)) return OpenPostgresStore(location, mode);
  return OpenSqliteStore(location, mode);
}

}  // namespace nearlabel
