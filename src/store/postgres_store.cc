// PostgreSQL store (libpq). The same logical schema as the SQLite store, plus what many
// processes sharing one database need: a change sequence for servers to follow and a job
// table for ingest workers. Schema (migration 1), see ARCHITECTURE.md "Store: PostgreSQL":
//   nearlabel_schema(version, applied_at, applied_by)       one row per migration applied
//   collection(key, value)                                    model, dims, metric, ...
//   items(id bigint, source, sha256 UNIQUE, metadata jsonb, embedding bytea)
//   thumbnails(id, jpeg bytea), blobs(key, value bytea)
//   changes(change_id bigint, item_id, op 'I'|'D')           written by triggers on items
//   ingest_jobs(job, path, state, worker, item_id, error, finished_at)
// Ids and change ids are drawn under one transaction-scoped advisory lock (taken by a
// statement trigger), so both increase in commit order: a follower that has applied every change up
// to N has seen every row committed before the change N+1, and never skips one.
#include <endian.h>
#include <libpq-fe.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "nearlabel/store.h"
#include "nearlabel/vector.h"

namespace nearlabel {
namespace {

constexpr int kSchemaVersion = 1;
// pg_advisory_xact_lock(kLockClass, kLock...) keys.
constexpr int kLockClass = 0x4E4C4231;  // "NLB1", as the SQLite application_id
constexpr int kLockChanges = 1;         // ids and change ids (taken by the trigger)
static_assert(kLockClass == 1313620529 && kLockChanges == 1,
              "the trigger in kMigrations spells the lock key out");
constexpr int kLockMigrations = 2;
constexpr int kLockCollection = 3;
constexpr const char* kNotifyChannel = "nearlabel_changes";

// Migration n is kMigrations[n - 1]; each runs in one transaction. Never edit a released
// migration: append a new one.
const char* const kMigrations[] = {
    R"sql(
CREATE TABLE collection (
  key   text PRIMARY KEY,
  value text NOT NULL
);
CREATE SEQUENCE item_ids;
CREATE SEQUENCE change_ids;
CREATE TABLE items (
  id        bigint PRIMARY KEY,
  source    text NOT NULL,
  sha256    text NOT NULL UNIQUE,
  metadata  jsonb NOT NULL CHECK (jsonb_typeof(metadata) = 'object'),
  embedding bytea NOT NULL
);
CREATE TABLE thumbnails (
  id   bigint PRIMARY KEY,
  jpeg bytea NOT NULL
);
-- Float vectors and JPEGs do not compress: storing them uncompressed (out of line when large)
-- saves the pglz attempt, which measured 2/3 of an ingest batch's insert time.
ALTER TABLE items ALTER COLUMN embedding SET STORAGE EXTERNAL;
ALTER TABLE thumbnails ALTER COLUMN jpeg SET STORAGE EXTERNAL;
CREATE TABLE blobs (
  key   text PRIMARY KEY,
  value bytea NOT NULL
);
CREATE TABLE changes (
  change_id bigint PRIMARY KEY,
  item_id   bigint NOT NULL,
  op        "char" NOT NULL CHECK (op IN ('I', 'D'))
);
CREATE TABLE ingest_jobs (
  job         text NOT NULL,
  path        text NOT NULL,
  state       text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
  worker      text,
  item_id     bigint,
  error       text,
  finished_at timestamptz,
  PRIMARY KEY (job, path)
);
CREATE INDEX ingest_jobs_pending ON ingest_jobs (job, path) WHERE state = 'pending';

-- Ids in commit order: every statement that writes items first takes the advisory lock
-- (held until its transaction ends), then the ids (column default) and change ids are drawn.
-- Statement-level triggers with transition tables log a whole batch in one set-based INSERT.
ALTER TABLE items ALTER COLUMN id SET DEFAULT nextval('item_ids');
CREATE FUNCTION nearlabel_lock_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(1313620529, 1);
  RETURN NULL;
END $$;
CREATE TRIGGER items_lock BEFORE INSERT OR DELETE ON items
  FOR EACH STATEMENT EXECUTE FUNCTION nearlabel_lock_changes();

CREATE FUNCTION nearlabel_items_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO changes SELECT nextval('change_ids'), id, 'I' FROM (SELECT id FROM new_rows ORDER BY id) AS n;
  IF FOUND THEN PERFORM pg_notify('nearlabel_changes', ''); END IF;  -- delivered at commit
  RETURN NULL;
END $$;
CREATE TRIGGER items_inserted AFTER INSERT ON items REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION nearlabel_items_inserted();

CREATE FUNCTION nearlabel_items_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO changes SELECT nextval('change_ids'), id, 'D' FROM (SELECT id FROM old_rows ORDER BY id) AS o;
  IF FOUND THEN
    DELETE FROM thumbnails WHERE id IN (SELECT id FROM old_rows);
    PERFORM pg_notify('nearlabel_changes', '');
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER items_deleted AFTER DELETE ON items REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION nearlabel_items_deleted();

-- field(metadata, name): as the SQLite store's function. A top-level key, else the key in
-- annotations[0].attributes (AI Hub labels); a name starting with '/' is a JSON pointer.
CREATE FUNCTION field(m jsonb, name text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE jsonb_typeof(v) WHEN 'string' THEN v #>> '{}' WHEN 'null' THEN NULL
                              ELSE v::text END
  FROM (SELECT CASE WHEN left(name, 1) = '/'
                    THEN m #> string_to_array(substr(name, 2), '/')
                    ELSE coalesce(m -> name, m #> ARRAY['annotations', '0', 'attributes', name])
               END AS v) AS s
$$;
CREATE FUNCTION vector_dims(v bytea) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
  SELECT length(v) / 4
$$;
)sql",
};
constexpr int kMigrationCount = sizeof(kMigrations) / sizeof(kMigrations[0]);
static_assert(kMigrationCount == kSchemaVersion, "one migration per schema version");

const char* const kAiHubView = R"sql(
CREATE OR REPLACE VIEW aihub_labels AS
SELECT id,
       metadata #>> '{annotations,0,attributes,part}'          AS part,
       metadata #>> '{annotations,0,attributes,quality}'       AS quality,
       metadata #>> '{annotations,0,attributes,categories,0}'  AS category1,
       metadata #>> '{annotations,0,attributes,categories,1}'  AS category2,
       source,
       embedding
FROM items
)sql";

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, ResultDeleter>;

// "postgresql://user:secret@host/db?password=x" -> "postgresql://user:***@host/db?password=***".
std::string MaskPassword(const std::string& uri) {
  std::string out = uri;
  const size_t scheme = out.find("://");
  if (scheme != std::string::npos) {
    const size_t start = scheme + 3;
    const size_t at = out.find('@', start);
    const size_t end = std::min(out.find('/', start), out.find('?', start));
    if (at != std::string::npos && at < end) {
      const size_t colon = out.find(':', start);
      if (colon != std::string::npos && colon < at) out.replace(colon + 1, at - colon - 1, "***");
    }
  }
  for (size_t p = out.find("password="); p != std::string::npos; p = out.find("password=", p + 1)) {
    const size_t v = p + 9;
    const size_t e = out.find('&', v);
    out.replace(v, (e == std::string::npos ? out.size() : e) - v, "***");
  }
  return out;
}

std::string Trimmed(const char* msg) {
  std::string s = msg ? msg : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// One libpq connection with the error mapping and the reconnect both stores and feeds need.
class Connection {
 public:
  explicit Connection(std::string uri) : uri_(std::move(uri)), masked_(MaskPassword(uri_)) {}
  ~Connection() {
    if (conn_) PQfinish(conn_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  const std::string& masked() const { return masked_; }
  PGconn* get() const { return conn_; }

  // Connects, or reconnects after a lost connection. `on_connect` statements run on every
  // new connection (session settings, LISTEN).
  Status Ensure() {
    if (conn_ && PQstatus(conn_) == CONNECTION_OK) return Status::OK();
    if (conn_) {
      PQfinish(conn_);
      conn_ = nullptr;
    }
    conn_ = PQconnectdb(uri_.c_str());
    if (!conn_ || PQstatus(conn_) != CONNECTION_OK) {
      std::string msg = conn_ ? Trimmed(PQerrorMessage(conn_)) : "out of memory";
      if (conn_) PQfinish(conn_);
      conn_ = nullptr;
      return Status::IOError("cannot connect to PostgreSQL at " + masked_ + ": " + msg);
    }
    for (const std::string& sql : on_connect_) {
      PgResult r(PQexec(conn_, sql.c_str()));
      if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) return Failure(r.get(), sql);
    }
    ++connections_;
    return Status::OK();
  }
  void OnConnect(std::string sql) { on_connect_.push_back(std::move(sql)); }
  int connections() const { return connections_; }
  bool lost() const { return conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK; }

  // Runs one statement without parameters (command or query, text results). The extended
  // protocol refuses a second statement in `sql`.
  Result<PgResult> Exec(const std::string& sql) { return Run(sql, {}, {}, 0); }

  // Runs a script of several statements (the simple protocol), for migrations.
  Status ExecScript(const std::string& sql) {
    NL_RETURN_IF_ERROR(Ensure());
    PgResult r(PQexec(conn_, sql.c_str()));
    if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) return Failure(r.get(), "migration");
    return Status::OK();
  }

  // Runs one statement with text parameters (`binary` marks bytea parameters passed as raw
  // bytes); `binary_result` asks for binary columns.
  Result<PgResult> Run(const std::string& sql, const std::vector<std::string>& params,
                       const std::vector<bool>& binary, int binary_result) {
    NL_RETURN_IF_ERROR(Ensure());
    std::vector<const char*> values;
    std::vector<int> lengths, formats;
    for (size_t i = 0; i < params.size(); ++i) {
      values.push_back(params[i].data());
      lengths.push_back(static_cast<int>(params[i].size()));
      formats.push_back(i < binary.size() && binary[i] ? 1 : 0);
    }
    PgResult r(PQexecParams(conn_, sql.c_str(), static_cast<int>(params.size()), nullptr,
                            values.data(), lengths.data(), formats.data(), binary_result));
    const ExecStatusType st = PQresultStatus(r.get());
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return Failure(r.get(), sql);
    return r;
  }

  // The Status for a failed statement: a lost connection is an IOError that says so; SQL
  // errors carry PostgreSQL's message (and SQLSTATE class decides the code).
  Status Failure(const PGresult* r, const std::string& what) const {
    if (lost()) {
      return Status::IOError("lost the connection to PostgreSQL at " + masked_ + " (" +
                             Trimmed(PQerrorMessage(conn_)) + ")");
    }
    const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    std::string msg = r ? Trimmed(PQresultErrorMessage(r)) : Trimmed(PQerrorMessage(conn_));
    if (msg.empty()) msg = Trimmed(PQerrorMessage(conn_));
    const std::string code = state ? state : "";
    (void)what;
    if (code.rfind("42", 0) == 0 || code.rfind("22", 0) == 0 || code == "25006") {
      return Status::InvalidArgument(msg);  // syntax/undefined, bad data, read-only txn
    }
    if (code.rfind("08", 0) == 0 || code.rfind("57", 0) == 0 || code.rfind("53", 0) == 0) {
      return Status::IOError(masked_ + ": " + msg);  // connection, shutdown, resources
    }
    return Status::Internal(masked_ + ": " + msg);
  }

 private:
  std::string uri_;
  std::string masked_;
  PGconn* conn_ = nullptr;
  std::vector<std::string> on_connect_;
  int connections_ = 0;
};

std::string Value(const PGresult* r, int row, int col) {
  return std::string(PQgetvalue(r, row, col), static_cast<size_t>(PQgetlength(r, row, col)));
}

int64_t BinaryInt64(const PGresult* r, int row, int col) {
  uint64_t v;
  std::memcpy(&v, PQgetvalue(r, row, col), 8);
  return static_cast<int64_t>(be64toh(v));
}

constexpr uint32_t kTextOid = 25, kByteaOid = 17;

// A one-dimensional array without NULLs in PostgreSQL's binary array format (array_recv):
// ndim, has-nulls flag, element type, then per dimension its length and lower bound, then each
// element as a 4-byte length and its bytes; all integers big-endian.
std::string BinaryArray(uint32_t element_oid, const std::vector<std::string_view>& elements) {
  std::string out;
  auto put = [&out](uint32_t v) {
    v = htobe32(v);
    out.append(reinterpret_cast<const char*>(&v), 4);
  };
  size_t total = 20;
  for (std::string_view e : elements) total += 4 + e.size();
  out.reserve(total);
  put(1);
  put(0);
  put(element_oid);
  put(static_cast<uint32_t>(elements.size()));
  put(1);
  for (std::string_view e : elements) {
    put(static_cast<uint32_t>(e.size()));
    out.append(e.data(), e.size());
  }
  return out;
}

std::string EmbeddingBytes(const std::vector<float>& v) {
  // Little-endian float32, as the SQLite store's BLOB (x86 and ARM are little-endian).
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "store format is little-endian");
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

// Runs every migration after the database's current version, each in its own transaction
// under the migration lock. Returns the version in place.
Result<int> Migrate(Connection& c, bool create, std::vector<std::string>* applied) {
  NL_RETURN_IF_ERROR(c.Ensure());
  NL_RETURN_IF_ERROR(c.Exec("SET client_min_messages = warning").status());
  for (;;) {
    NL_RETURN_IF_ERROR(c.Exec("BEGIN").status());
    auto body = [&]() -> Result<int> {
      NL_RETURN_IF_ERROR(c.Exec("SELECT pg_advisory_xact_lock(" + std::to_string(kLockClass) +
                                ", " + std::to_string(kLockMigrations) + ")")
                             .status());
      NL_ASSIGN_OR_RETURN(PgResult has,
                          c.Exec("SELECT to_regclass('nearlabel_schema') IS NOT NULL, "
                                 "to_regclass('items') IS NOT NULL"));
      const bool schema = Value(has.get(), 0, 0) == "t";
      if (!schema) {
        if (Value(has.get(), 0, 1) == "t") {
          return Status::InvalidArgument(
              "database " + c.masked() +
              " has an items table but is not a nearlabel store; use another database or "
              "schema (?options=-csearch_path%3DNAME)");
        }
        if (!create) {
          return Status::NotFound("no nearlabel store in " + c.masked() +
                                  " (create it with `nearlabel init " + c.masked() +
                                  "` or `nearlabel ingest`)");
        }
        NL_RETURN_IF_ERROR(
            c.Exec("CREATE TABLE nearlabel_schema (version integer PRIMARY KEY, applied_at "
                   "timestamptz NOT NULL DEFAULT now(), applied_by text NOT NULL)")
                .status());
      }
      NL_ASSIGN_OR_RETURN(PgResult v,
                          c.Exec("SELECT coalesce(max(version), 0) FROM nearlabel_schema"));
      const int version = std::atoi(PQgetvalue(v.get(), 0, 0));
      if (version > kSchemaVersion) {
        return Status::Unsupported(c.masked() + " has store schema " + std::to_string(version) +
                                   ", newer than this nearlabel reads (" +
                                   std::to_string(kSchemaVersion) + "); upgrade nearlabel");
      }
      if (version == kSchemaVersion || !create) return version;
      NL_RETURN_IF_ERROR(c.ExecScript(kMigrations[version]));
      NL_RETURN_IF_ERROR(c.Run("INSERT INTO nearlabel_schema (version, applied_by) VALUES ($1, $2)",
                               {std::to_string(version + 1), "nearlabel " NEARLABEL_VERSION}, {}, 0)
                             .status());
      if (applied) applied->push_back("migration " + std::to_string(version + 1));
      return version + 1;
    };
    Result<int> r = body();
    if (!r.ok()) {
      c.Exec("ROLLBACK");
      return r.status();
    }
    NL_RETURN_IF_ERROR(c.Exec("COMMIT").status());
    if (*r == kSchemaVersion || !create) return r;
  }
}

class PostgresStore : public Store, public IngestQueue {
 public:
  PostgresStore(const std::string& uri, Mode mode)
      : uri_(uri), conn_(uri), mode_(mode == Mode::kCreate ? Mode::kReadWrite : mode) {
    conn_.OnConnect("SET client_min_messages = warning");
    if (mode_ == Mode::kReadOnly) conn_.OnConnect("SET default_transaction_read_only = on");
  }

  Status Init(bool create) {
    NL_ASSIGN_OR_RETURN(int version, Migrate(conn_, create, nullptr));
    if (version < kSchemaVersion) {
      if (mode_ == Mode::kReadOnly && version > 0) return Status::OK();  // read what is there
      return Status::Unsupported(conn_.masked() + " has store schema " + std::to_string(version) +
                                 "; run `nearlabel init " + conn_.masked() + "` to upgrade it");
    }
    return Status::OK();
  }

  std::string location() const override { return conn_.masked(); }
  IngestQueue* ingest_queue() override { return this; }
  Result<std::unique_ptr<ChangeFeed>> OpenChangeFeed() override;

  Result<std::optional<CollectionInfo>> GetCollection() override {
    return Retrying([&]() -> Result<std::optional<CollectionInfo>> {
      NL_ASSIGN_OR_RETURN(PgResult r, conn_.Exec("SELECT key, value FROM collection"));
      CollectionInfo info;
      bool any = false;
      for (int i = 0; i < PQntuples(r.get()); ++i) {
        const std::string key = Value(r.get(), i, 0), value = Value(r.get(), i, 1);
        if (key == "model") info.model = value, any = true;
        if (key == "model_sha256") info.model_sha256 = value;
        if (key == "dims") info.dims = std::atoi(value.c_str());
        if (key == "metric") info.metric = value;
        if (key == "label_field") info.label_field = value;
        if (key == "embedding") info.embedding = value;
        if (key == kCentreSettingKey) info.centre = value;
      }
      if (!any) return std::optional<CollectionInfo>();
      return std::optional<CollectionInfo>(info);
    });
  }

  Status EnsureCollection(const CollectionInfo& info) override {
    NL_RETURN_IF_ERROR(RequireWritable());
    return InTransaction([&]() -> Status {
      // Serialised: workers starting together record the info once and compare with it.
      NL_RETURN_IF_ERROR(Lock(kLockCollection));
      NL_ASSIGN_OR_RETURN(auto current, GetCollection());
      if (current) {
        const std::string difference = CollectionDifference(*current, info, location());
        return difference.empty() ? Status::OK() : Status::Mismatch(difference);
      }
      return PutAll({{"model", info.model},
                     {"model_sha256", info.model_sha256},
                     {"dims", std::to_string(info.dims)},
                     {"metric", info.metric},
                     {"label_field", info.label_field},
                     {"embedding", info.embedding},
                     {"created_by", "nearlabel " NEARLABEL_VERSION}});
    });
  }

  Result<InsertResult> InsertBatch(const std::vector<NewItem>& items) override {
    NL_RETURN_IF_ERROR(RequireWritable());
    InsertResult result;
    NL_RETURN_IF_ERROR(InTransaction([&] { return InsertAll(items, &result); }));
    return result;
  }

  Result<std::unordered_set<std::string>> AllSha256() override {
    return Retrying([&]() -> Result<std::unordered_set<std::string>> {
      NL_ASSIGN_OR_RETURN(PgResult r, conn_.Exec("SELECT sha256 FROM items"));
      std::unordered_set<std::string> out;
      for (int i = 0; i < PQntuples(r.get()); ++i) out.insert(Value(r.get(), i, 0));
      return out;
    });
  }

  // The server checksums and checks its own pages (data_checksums, amcheck): nothing here
  // reads them.
  Status CheckIntegrity() override { return Status::OK(); }

  Result<VectorTable> LoadVectors(const std::string& where_sql) override {
    return Retrying([&]() -> Result<VectorTable> {
      VectorTable t;
      NL_ASSIGN_OR_RETURN(auto info, GetCollection());
      if (!info) return t;
      t.dims = info->dims;
      const size_t bytes = static_cast<size_t>(t.dims) * 4;
      // A binary cursor fetched in chunks: memory stays at one chunk beyond the table itself.
      NL_RETURN_IF_ERROR(Cursor(
          "id, source, metadata::text, embedding", where_sql, [&](const PGresult* r) -> Status {
            for (int i = 0; i < PQntuples(r); ++i) {
              const int64_t id = BinaryInt64(r, i, 0);
              if (static_cast<size_t>(PQgetlength(r, i, 3)) != bytes) {
                return Status::Corruption("row " + std::to_string(id) + " has an embedding of " +
                                          std::to_string(PQgetlength(r, i, 3)) +
                                          " bytes, expected " + std::to_string(bytes));
              }
              const float* f = reinterpret_cast<const float*>(PQgetvalue(r, i, 3));
              std::string problem = EmbeddingProblem(f, static_cast<size_t>(t.dims));
              if (!problem.empty()) {
                t.damaged.emplace_back(id, std::move(problem));
                continue;
              }
              t.ids.push_back(id);
              t.sources.push_back(Value(r, i, 1));
              t.metadata.push_back(Value(r, i, 2));
              t.vectors.insert(t.vectors.end(), f, f + t.dims);
            }
            return Status::OK();
          }));
      return t;
    });
  }

  Result<std::vector<int64_t>> SelectIds(const std::string& where_sql) override {
    return Retrying([&]() -> Result<std::vector<int64_t>> {
      std::vector<int64_t> ids;
      NL_RETURN_IF_ERROR(Cursor("id", where_sql, [&](const PGresult* r) {
        for (int i = 0; i < PQntuples(r); ++i) ids.push_back(BinaryInt64(r, i, 0));
        return Status::OK();
      }));
      return ids;
    });
  }

  Result<std::vector<int64_t>> Delete(const std::string& where_sql) override {
    NL_RETURN_IF_ERROR(RequireWritable());
    if (where_sql.empty()) return Status::InvalidArgument("delete needs a --where condition");
    std::vector<int64_t> ids;
    NL_RETURN_IF_ERROR(InTransaction([&]() -> Status {
      auto r = conn_.Exec("DELETE FROM items WHERE (" + where_sql + "\n) RETURNING id");
      if (!r.ok()) return WhereError(r.status());
      for (int i = 0; i < PQntuples(r->get()); ++i) {
        ids.push_back(std::atoll(PQgetvalue(r->get(), i, 0)));
      }
      return Status::OK();
    }));
    std::sort(ids.begin(), ids.end());
    return ids;
  }

  Result<std::string> GetSetting(const std::string& key) override {
    return Retrying([&]() -> Result<std::string> {
      NL_ASSIGN_OR_RETURN(PgResult r,
                          conn_.Run("SELECT value FROM collection WHERE key = $1", {key}, {}, 0));
      return PQntuples(r.get()) ? Value(r.get(), 0, 0) : std::string();
    });
  }

  Status PutSettings(const std::vector<std::pair<std::string, std::string>>& values) override {
    NL_RETURN_IF_ERROR(RequireWritable());
    return InTransaction([&] { return PutAll(values); });
  }

  Result<std::string> GetBlob(const std::string& key) override {
    return Retrying([&]() -> Result<std::string> {
      NL_ASSIGN_OR_RETURN(PgResult r,
                          conn_.Run("SELECT value FROM blobs WHERE key = $1", {key}, {}, 1));
      if (PQntuples(r.get()) == 0)
        return Status::NotFound("store " + location() + " has no " + key);
      return Value(r.get(), 0, 0);
    });
  }

  Status PutBlob(const std::string& key, const std::string& value) override {
    NL_RETURN_IF_ERROR(RequireWritable());
    return InTransaction([&]() -> Status {
      if (value.empty())
        return conn_.Run("DELETE FROM blobs WHERE key = $1", {key}, {}, 0).status();
      return conn_
          .Run(
              "INSERT INTO blobs (key, value) VALUES ($1, $2) "
              "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
              {key, value}, {false, true}, 0)
          .status();
    });
  }

  Result<ItemRecord> GetItem(int64_t id) override {
    return Retrying([&]() -> Result<ItemRecord> {
      NL_ASSIGN_OR_RETURN(
          PgResult r,
          conn_.Run("SELECT source, sha256, metadata::text, embedding FROM items WHERE id = $1",
                    {std::to_string(id)}, {}, 1));
      if (PQntuples(r.get()) == 0) return Status::NotFound("no item " + std::to_string(id));
      ItemRecord rec;
      rec.id = id;
      rec.source = Value(r.get(), 0, 0);
      rec.sha256 = Value(r.get(), 0, 1);
      rec.metadata_json = Value(r.get(), 0, 2);
      NL_ASSIGN_OR_RETURN(rec.embedding,
                          VectorFromBlob(PQgetvalue(r.get(), 0, 3),
                                         static_cast<size_t>(PQgetlength(r.get(), 0, 3))));
      return rec;
    });
  }

  Result<std::string> GetThumbnail(int64_t id) override {
    return Retrying([&]() -> Result<std::string> {
      NL_ASSIGN_OR_RETURN(PgResult r, conn_.Run("SELECT jpeg FROM thumbnails WHERE id = $1",
                                                {std::to_string(id)}, {}, 1));
      if (PQntuples(r.get()) == 0) {
        return Status::NotFound("no thumbnail for item " + std::to_string(id));
      }
      return Value(r.get(), 0, 0);
    });
  }

  Result<int64_t> Count() override {
    return Retrying([&]() -> Result<int64_t> {
      NL_ASSIGN_OR_RETURN(PgResult r, conn_.Exec("SELECT count(*) FROM items"));
      return static_cast<int64_t>(std::atoll(PQgetvalue(r.get(), 0, 0)));
    });
  }

  // Statements run as PostgreSQL runs a multi-statement query string (one implicit
  // transaction unless they contain their own BEGIN/COMMIT). Read-only mode runs them in a
  // READ ONLY transaction on a connection whose default is read-only, so a statement that
  // writes fails with PostgreSQL's "cannot execute ... in a read-only transaction".
  Result<std::vector<SqlResult>> Execute(const std::string& sql) override {
    NL_RETURN_IF_ERROR(conn_.Ensure());
    const bool read_only = mode_ == Mode::kReadOnly;
    if (read_only) NL_RETURN_IF_ERROR(conn_.Exec("BEGIN READ ONLY").status());
    std::vector<SqlResult> results;
    Status failure;
    if (!PQsendQuery(conn_.get(), sql.c_str())) {
      failure = conn_.Failure(nullptr, sql);
    } else {
      while (PGresult* raw = PQgetResult(conn_.get())) {
        PgResult r(raw);
        const ExecStatusType st = PQresultStatus(raw);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
          if (failure.ok()) failure = conn_.Failure(raw, sql);
          continue;
        }
        if (failure.ok()) results.push_back(ToSqlResult(raw, sql));
      }
    }
    if (read_only) conn_.Exec("ROLLBACK");
    if (!failure.ok()) {
      if (read_only && failure.code() == Status::Code::kInvalidArgument &&
          failure.message().find("read-only transaction") != std::string::npos) {
        return Status::InvalidArgument(
            "the store is open read-only and this statement writes (pass --write to allow "
            "it): " +
            failure.message());
      }
      return failure;
    }
    return results;
  }

  Status EnsureAiHubView() override {
    NL_RETURN_IF_ERROR(RequireWritable());
    return conn_.Exec(kAiHubView).status();
  }

  // ---- IngestQueue ----

  Result<size_t> Enqueue(const std::string& job,
                         const std::vector<std::string>& relative_paths) override {
    NL_RETURN_IF_ERROR(RequireWritable());
    size_t added = 0;
    // In chunks of 10,000 paths per statement: one round trip each, arrays as text.
    for (size_t b = 0; b < relative_paths.size(); b += 10000) {
      const size_t e = std::min(relative_paths.size(), b + 10000);
      std::string array = "{";
      for (size_t i = b; i < e; ++i) {
        if (i > b) array += ',';
        array += '"';
        for (char c : relative_paths[i]) {
          if (c == '"' || c == '\\') array += '\\';
          array += c;
        }
        array += '"';
      }
      array += '}';
      NL_ASSIGN_OR_RETURN(PgResult r,
                          conn_.Run("INSERT INTO ingest_jobs (job, path) SELECT $1, p FROM "
                                    "unnest($2::text[]) AS p ON CONFLICT (job, path) DO NOTHING",
                                    {job, array}, {}, 0));
      added += static_cast<size_t>(std::atoll(PQcmdTuples(r.get())));
    }
    return added;
  }

  Result<std::vector<std::string>> Claim(const std::string& job, size_t n,
                                         int lease_seconds) override {
    NL_RETURN_IF_ERROR(RequireWritable());
    if (in_claim_) Abandon();
    NL_RETURN_IF_ERROR(conn_.Exec("BEGIN").status());
    in_claim_ = true;
    // The lease: PostgreSQL ends a session idle in a transaction this long, which aborts the
    // transaction and frees its claim for other workers.
    auto set = conn_.Exec("SET LOCAL idle_in_transaction_session_timeout = " +
                          std::to_string(std::max(1, lease_seconds) * 1000));
    if (!set.ok()) {
      Abandon();
      return set.status();
    }
    auto r = conn_.Run(
        "SELECT path FROM ingest_jobs WHERE job = $1 AND state = 'pending' ORDER BY path "
        "LIMIT $2 FOR UPDATE SKIP LOCKED",
        {job, std::to_string(n)}, {}, 0);
    if (!r.ok()) {
      Abandon();
      return r.status();
    }
    std::vector<std::string> paths;
    for (int i = 0; i < PQntuples(r->get()); ++i) paths.push_back(Value(r->get(), i, 0));
    if (paths.empty()) Abandon();
    return paths;
  }

  Result<InsertResult> Complete(
      const std::string& job, const std::vector<NewItem>& rows,
      const std::vector<std::string>& done,
      const std::vector<std::pair<std::string, std::string>>& failed) override {
    if (!in_claim_) return Status::Internal("Complete without a claim");
    InsertResult result;
    auto body = [&]() -> Status {
      NL_RETURN_IF_ERROR(InsertAll(rows, &result));
      const std::string worker = Worker();
      if (!done.empty()) {
        std::vector<std::string_view> paths(done.begin(), done.end());
        NL_RETURN_IF_ERROR(conn_
                               .Run("UPDATE ingest_jobs SET state = 'done', worker = $3, "
                                    "finished_at = now() WHERE job = $1 AND path = ANY($2::text[])",
                                    {job, BinaryArray(kTextOid, paths), worker},
                                    {false, true, false}, 0)
                               .status());
      }
      for (const auto& [p, why] : failed) {
        NL_RETURN_IF_ERROR(conn_
                               .Run("UPDATE ingest_jobs SET state = 'failed', worker = $3, "
                                    "error = $4, finished_at = now() WHERE job = $1 AND path = $2",
                                    {job, p, worker, why}, {}, 0)
                               .status());
      }
      return conn_.Exec("COMMIT").status();
    };
    Status st = body();
    in_claim_ = false;
    if (!st.ok()) {
      if (!conn_.lost()) conn_.Exec("ROLLBACK");
      return st;
    }
    return result;
  }

  void Abandon() override {
    if (in_claim_ && !conn_.lost()) conn_.Exec("ROLLBACK");
    in_claim_ = false;
  }

  Result<QueueCounts> Counts(const std::string& job) override {
    NL_ASSIGN_OR_RETURN(
        PgResult r,
        conn_.Run("SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE "
                  "state = 'done'), count(*) FILTER (WHERE state = 'failed') FROM ingest_jobs "
                  "WHERE job = $1",
                  {job}, {}, 0));
    QueueCounts c;
    c.pending = std::atoll(PQgetvalue(r.get(), 0, 0));
    c.done = std::atoll(PQgetvalue(r.get(), 0, 1));
    c.failed = std::atoll(PQgetvalue(r.get(), 0, 2));
    return c;
  }

 private:
  Status RequireWritable() const {
    if (mode_ != Mode::kReadWrite)
      return Status::InvalidArgument("store " + location() + " is open read-only");
    return Status::OK();
  }

  static std::string Worker() {
    char host[256] = {0};
    gethostname(host, sizeof(host) - 1);
    return std::string(host) + ":" + std::to_string(getpid());
  }

  Status Lock(int which) {
    return conn_
        .Exec("SELECT pg_advisory_xact_lock(" + std::to_string(kLockClass) + ", " +
              std::to_string(which) + ")")
        .status();
  }

  // A read that found the connection lost runs once more on a new connection: a server whose
  // database restarted answers its next request instead of failing it.
  template <typename F>
  auto Retrying(const F& read) -> decltype(read()) {
    auto r = read();
    if (!r.ok() && conn_.lost() && conn_.Ensure().ok()) return read();
    return r;
  }

  // Runs `body` in one transaction: committed when it returns OK, rolled back otherwise.
  template <typename Body>
  Status InTransaction(const Body& body) {
    NL_RETURN_IF_ERROR(conn_.Exec("BEGIN").status());
    Status st = body();
    if (!st.ok()) {
      if (!conn_.lost()) conn_.Exec("ROLLBACK");
      return st;
    }
    Status committed = conn_.Exec("COMMIT").status();
    if (!committed.ok() && conn_.lost()) {
      return Status::IOError(committed.message() +
                             "; the transaction may or may not have committed (rows are keyed "
                             "by content, so running the same ingest again is safe)");
    }
    return committed;
  }

  Status WhereError(const Status& st) const {
    if (st.code() == Status::Code::kInvalidArgument) {
      return Status::InvalidArgument("bad --where expression: " + st.message());
    }
    return st;
  }

  // SELECT <columns> FROM items [WHERE (<where_sql>)] ORDER BY id through a binary cursor in a
  // READ ONLY transaction (so --where can never write), calling `chunk` per 4,096 rows.
  template <typename Chunk>
  Status Cursor(const std::string& columns, const std::string& where_sql, const Chunk& chunk) {
    std::string sql =
        "DECLARE nearlabel_rows BINARY NO SCROLL CURSOR FOR SELECT " + columns + " FROM items";
    if (!where_sql.empty()) sql += " WHERE (" + where_sql + "\n)";
    sql += " ORDER BY id";
    const bool own = !in_claim_;
    if (own) NL_RETURN_IF_ERROR(conn_.Exec("BEGIN READ ONLY").status());
    auto body = [&]() -> Status {
      // Parameters make PostgreSQL refuse a second statement smuggled into the expression.
      auto declared = conn_.Run(sql, {}, {}, 0);
      if (!declared.ok()) return WhereError(declared.status());
      for (;;) {
        NL_ASSIGN_OR_RETURN(PgResult r,
                            conn_.Run("FETCH FORWARD 4096 FROM nearlabel_rows", {}, {}, 1));
        if (PQntuples(r.get()) == 0) break;
        NL_RETURN_IF_ERROR(chunk(r.get()));
      }
      return conn_.Exec("CLOSE nearlabel_rows").status();
    };
    Status st = body();
    if (own && !conn_.lost()) conn_.Exec(st.ok() ? "COMMIT" : "ROLLBACK");
    return st;
  }

  Status PutAll(const std::vector<std::pair<std::string, std::string>>& values) {
    for (const auto& [k, v] : values) {
      if (v.empty()) {
        NL_RETURN_IF_ERROR(conn_.Run("DELETE FROM collection WHERE key = $1", {k}, {}, 0).status());
      } else {
        NL_RETURN_IF_ERROR(conn_
                               .Run("INSERT INTO collection (key, value) VALUES ($1, $2) ON "
                                    "CONFLICT (key) DO UPDATE SET value = excluded.value",
                                    {k, v}, {}, 0)
                               .status());
      }
    }
    return Status::OK();
  }

  // Within a transaction. Ids come from the column default, under the change lock.
  Status InsertAll(const std::vector<NewItem>& items, InsertResult* result) {
    if (dims_ == 0) {
      NL_ASSIGN_OR_RETURN(auto info, GetCollection());
      if (!info)
        return Status::InvalidArgument("store " + location() + " has no collection info yet");
      dims_ = info->dims;
    }
    for (const NewItem& it : items) {
      if (static_cast<int>(it.embedding.size()) != dims_) {
        return Status::Mismatch("embedding of " + it.source + " has " +
                                std::to_string(it.embedding.size()) + " dims, the store holds " +
                                std::to_string(dims_));
      }
    }
    if (items.empty()) return Status::OK();
    // One statement for the whole batch (arrays in PostgreSQL's binary array format), not one
    // round trip per row: the per-batch database time is a few round trips whatever the size.
    std::vector<std::string_view> sources, hashes, metadata, embeddings;
    std::vector<std::string> bytes;
    bytes.reserve(items.size());
    for (const NewItem& it : items) {
      sources.push_back(it.source);
      hashes.push_back(it.sha256);
      metadata.push_back(it.metadata_json);
      bytes.push_back(EmbeddingBytes(it.embedding));
      embeddings.push_back(bytes.back());
    }
    auto r = conn_.Run(
        "INSERT INTO items (source, sha256, metadata, embedding) SELECT s, h, m::jsonb, e FROM "
        "unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) WITH ORDINALITY AS t(s, h, m, "
        "e, n) ORDER BY n ON CONFLICT (sha256) DO NOTHING RETURNING id, sha256",
        {BinaryArray(kTextOid, sources), BinaryArray(kTextOid, hashes),
         BinaryArray(kTextOid, metadata), BinaryArray(kByteaOid, embeddings)},
        {true, true, true, true}, 0);
    if (!r.ok()) {
      // Say which row PostgreSQL refused (e.g. metadata it cannot hold as jsonb).
      return r.status().WithContext("inserting a batch of " + std::to_string(items.size()) +
                                    " rows from " + items.front().source);
    }
    std::unordered_map<std::string, int64_t> id_of;
    for (int i = 0; i < PQntuples(r->get()); ++i) {
      id_of[Value(r->get(), i, 1)] = std::atoll(PQgetvalue(r->get(), i, 0));
    }
    std::vector<std::string> thumb_ids;
    std::vector<std::string_view> thumbs, missing;
    std::unordered_set<std::string_view> seen;
    for (const NewItem& it : items) {
      auto f = id_of.find(it.sha256);
      if (f == id_of.end() || !seen.insert(it.sha256).second) {
        missing.push_back(it.sha256);  // stored before, or twice in this batch
      } else if (!it.thumbnail_jpeg.empty()) {
        thumb_ids.push_back(std::to_string(f->second));
        thumbs.push_back(it.thumbnail_jpeg);
      }
    }
    if (!thumbs.empty()) {
      std::vector<std::string_view> ids(thumb_ids.begin(), thumb_ids.end());
      NL_RETURN_IF_ERROR(conn_
                             .Run("INSERT INTO thumbnails (id, jpeg) SELECT i::bigint, j FROM "
                                  "unnest($1::text[], $2::bytea[]) AS t(i, j)",
                                  {BinaryArray(kTextOid, ids), BinaryArray(kByteaOid, thumbs)},
                                  {true, true}, 0)
                             .status());
    }
    std::unordered_map<std::string, int64_t> existing;
    if (!missing.empty()) {
      NL_ASSIGN_OR_RETURN(PgResult f,
                          conn_.Run("SELECT sha256, id FROM items WHERE sha256 = ANY($1::text[])",
                                    {BinaryArray(kTextOid, missing)}, {true}, 0));
      for (int i = 0; i < PQntuples(f.get()); ++i) {
        existing[Value(f.get(), i, 0)] = std::atoll(PQgetvalue(f.get(), i, 1));
      }
    }
    for (const NewItem& it : items) {
      if (auto f = id_of.find(it.sha256); f != id_of.end()) {
        result->ids.push_back(f->second);
        ++result->inserted;
        id_of.erase(f);  // the same content twice in one batch: the second is a duplicate
        existing[it.sha256] = result->ids.back();
      } else if (auto e = existing.find(it.sha256); e != existing.end()) {
        result->ids.push_back(e->second);
        ++result->duplicates;
      } else {
        return Status::Internal("row " + it.sha256 + " neither inserted nor found");
      }
    }
    return Status::OK();
  }

  static SqlResult ToSqlResult(const PGresult* r, const std::string& sql) {
    SqlResult out;
    out.sql = sql;
    const int ncol = PQnfields(r);
    for (int c = 0; c < ncol; ++c) out.columns.push_back(PQfname(r, c));
    for (int i = 0; i < PQntuples(r); ++i) {
      std::vector<SqlValue> row;
      for (int c = 0; c < ncol; ++c) {
        if (PQgetisnull(r, i, c)) {
          row.emplace_back(std::monostate{});
          continue;
        }
        const char* v = PQgetvalue(r, i, c);
        switch (PQftype(r, c)) {
          case 20:  // int8
          case 21:  // int2
          case 23:  // int4
            row.emplace_back(int64_t{std::atoll(v)});
            break;
          case 700:  // float4
          case 701:  // float8
            row.emplace_back(std::strtod(v, nullptr));
            break;
          case 17: {  // bytea, "\x..." in text results
            size_t n = 0;
            unsigned char* bytes = PQunescapeBytea(reinterpret_cast<const unsigned char*>(v), &n);
            row.emplace_back(std::vector<uint8_t>(bytes, bytes + n));
            PQfreemem(bytes);
            break;
          }
          default:
            row.emplace_back(Value(r, i, c));
        }
      }
      out.rows.push_back(std::move(row));
    }
    if (PQresultStatus(r) == PGRES_COMMAND_OK) {
      out.columns.clear();
      out.changes = std::atoll(PQcmdTuples(const_cast<PGresult*>(r)));
    }
    return out;
  }

  std::string uri_;
  Connection conn_;
  Mode mode_;
  int dims_ = 0;
  bool in_claim_ = false;
};

class PostgresChangeFeed : public ChangeFeed {
 public:
  explicit PostgresChangeFeed(const std::string& uri) : conn_(uri) {
    conn_.OnConnect("SET client_min_messages = warning");
    conn_.OnConnect(std::string("LISTEN ") + kNotifyChannel);
  }

  Result<int64_t> LastChangeId() override {
    NL_ASSIGN_OR_RETURN(PgResult r, conn_.Exec("SELECT coalesce(max(change_id), 0) FROM changes"));
    return static_cast<int64_t>(std::atoll(PQgetvalue(r.get(), 0, 0)));
  }

  Result<std::vector<StoreChange>> ChangesAfter(int64_t change_id, size_t limit) override {
    NL_ASSIGN_OR_RETURN(
        PgResult r, conn_.Run("SELECT c.change_id, c.item_id, c.op::text, i.id IS NOT NULL, "
                              "i.source, i.metadata::text, i.embedding FROM changes c LEFT JOIN "
                              "items i ON c.op = 'I' AND i.id = c.item_id WHERE c.change_id > "
                              "$1 ORDER BY c.change_id LIMIT $2",
                              {std::to_string(change_id), std::to_string(limit)}, {}, 1));
    std::vector<StoreChange> out(static_cast<size_t>(PQntuples(r.get())));
    for (size_t i = 0; i < out.size(); ++i) {
      const int row = static_cast<int>(i);
      StoreChange& c = out[i];
      c.change_id = BinaryInt64(r.get(), row, 0);
      c.item_id = BinaryInt64(r.get(), row, 1);
      c.deleted = Value(r.get(), row, 2) == "D";
      c.present = *PQgetvalue(r.get(), row, 3) != 0;
      if (c.present) {
        c.source = Value(r.get(), row, 4);
        c.metadata = Value(r.get(), row, 5);
        NL_ASSIGN_OR_RETURN(c.embedding,
                            VectorFromBlob(PQgetvalue(r.get(), row, 6),
                                           static_cast<size_t>(PQgetlength(r.get(), row, 6))));
      }
    }
    return out;
  }

  Result<bool> WaitForChanges(int timeout_ms) override {
    NL_RETURN_IF_ERROR(conn_.Ensure());
    PGconn* c = conn_.get();
    auto drain = [&] {
      bool any = false;
      while (PGnotify* n = PQnotifies(c)) {
        any = true;
        PQfreemem(n);
      }
      return any;
    };
    if (!PQconsumeInput(c)) return conn_.Failure(nullptr, "LISTEN");
    if (drain()) return true;
    pollfd p{PQsocket(c), POLLIN, 0};
    const int ready = poll(&p, 1, timeout_ms);
    if (ready < 0) return Status::IOError(std::string("waiting for changes: ") + strerror(errno));
    if (ready == 0) return false;
    if (!PQconsumeInput(c)) return conn_.Failure(nullptr, "LISTEN");
    return drain();
  }

 private:
  Connection conn_;
};

Result<std::unique_ptr<ChangeFeed>> PostgresStore::OpenChangeFeed() {
  auto feed = std::make_unique<PostgresChangeFeed>(uri_);
  return std::unique_ptr<ChangeFeed>(std::move(feed));
}

}  // namespace

Result<std::unique_ptr<Store>> OpenPostgresStore(const std::string& uri, Store::Mode mode) {
  auto store = std::make_unique<PostgresStore>(uri, mode);
  NL_RETURN_IF_ERROR(store->Init(mode == Store::Mode::kCreate));
  return std::unique_ptr<Store>(std::move(store));
}

std::string MaskedLocation(const std::string& location) {
  return IsPostgresUri(location) ? MaskPassword(location) : location;
}

Result<int> RunPostgresMigrations(const std::string& uri, std::vector<std::string>* applied) {
  Connection c(uri);
  return Migrate(c, true, applied);
}

}  // namespace nearlabel
