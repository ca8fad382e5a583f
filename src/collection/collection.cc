// Collection: segment + overlay + index + the one query planner (see collection.h and
// ARCHITECTURE.md, "Collection and query planner").
#include "nearlabel/collection.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <variant>

#include "common/fs.h"
#include "common/json.h"
#include "common/sha256.h"
#include "nearlabel/dataset.h"
#include "nearlabel/search.h"
#include "nearlabel/segment.h"
#include "nearlabel/vector.h"
#include "search/simd.h"

namespace nearlabel {
namespace {

namespace fs = std::filesystem;

constexpr const char* kIndexChangeId = "index.change_id";  // written by SaveStoreIndex

double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string Seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f s", s);
  return buf;
}

}  // namespace

Result<ModelCard> ModelOfStore(const CollectionInfo& info, const std::string& location,
                               const std::vector<std::string>& dirs, const std::string& requested) {
  const std::string name = requested.empty() ? info.model : requested;
  NL_ASSIGN_OR_RETURN(ModelCard card, FindModel(name, dirs));
  NL_ASSIGN_OR_RETURN(std::string sha, Sha256File(card.onnx_path));
  if (card.name != info.model || sha != info.model_sha256 || card.dims != info.dims) {
    return Status::Mismatch("store " + MaskedLocation(location) + " was built with model '" +
                            info.model + "' (" + std::to_string(info.dims) + "-d), not '" +
                            card.name + "' (" + std::to_string(card.dims) + "-d" +
                            (sha != info.model_sha256 ? ", different ONNX file" : "") + ")");
  }
  return CardWithStoreOptions(card, info);
}

Result<ModelCard> CardWithStoreOptions(const ModelCard& card, const CollectionInfo& info) {
  EmbeddingOptions e;  // a store from before embedding options: none
  if (!info.embedding.empty()) {
    NL_ASSIGN_OR_RETURN(e, ParseEmbeddingOptions(info.embedding, "the store's collection info"));
  }
  NL_ASSIGN_OR_RETURN(ModelCard out, WithEmbeddingOptions(card, e));
  if (e.centre && !info.centre.empty()) {
    const nlohmann::json mean = ParseJson(info.centre);
    bool ok = mean.is_array() && mean.size() == static_cast<size_t>(card.dims);
    for (size_t k = 0; ok && k < mean.size(); ++k) {
      ok = mean[k].is_number() && std::fabs(mean[k].get<double>()) <= 1;  // a mean of unit vectors
    }
    if (!ok) {
      return Status::Corruption("the store's centre vector (" + std::string(kCentreSettingKey) +
                                ") is not " + std::to_string(card.dims) + " numbers");
    }
    out.centre_mean = mean.get<std::vector<float>>();
  }
  return out;
}

Result<ModelCard> CardForIngest(const ModelCard& card,
                                const std::optional<CollectionInfo>& existing,
                                EmbeddingOptions requested, bool shared) {
  if (existing && existing->model == card.name) return CardWithStoreOptions(card, *existing);
  if (shared) requested.centre = false;
  return WithEmbeddingOptions(card, requested);
}

std::string SegmentPath(const std::string& store_path) { return store_path + ".vectors"; }

struct Collection::Impl {
  CollectionOptions options;
  std::string location;
  CollectionInfo info;
  std::string store_id;
  std::string notices;  // what the user should know (a rebuilt segment, an unusable index)
  std::string log;      // routine work done while opening (for -v)

  mutable std::mutex store_mu;  // the store connection: metadata by id, filters
  std::unique_ptr<Store> store;
  std::mutex feed_mu;
  std::unique_ptr<ChangeFeed> feed;  // null: a format-2 store (nothing to follow)

  mutable std::shared_mutex mu;  // guards everything below
  // Shared: Vectors() hands it out, and a view outlives a later swap.
  std::shared_ptr<VectorSegment> segment;
  std::unordered_set<int64_t> removed;          // segment rows deleted since it was written
  std::map<int64_t, std::vector<float>> added;  // rows added since, by id
  int64_t change_id = 0;                        // every change up to this one is applied
  // options.keep_metadata: every row's source and metadata, so answers need no store read.
  std::unordered_map<int64_t, std::pair<std::string, std::string>> meta;
  std::unique_ptr<HnswIndex> index;
  std::unordered_set<int64_t> index_stale;  // ids changed since the index was saved
  std::set<int64_t> index_extras;           // live rows among them (answered exactly)

  // ---- reading rows (caller holds mu) ----
  const float* Vector(int64_t id) const {
    auto a = added.find(id);
    if (a != added.end()) return a->second.data();
    if (removed.count(id)) return nullptr;
    const long at = segment->Find(id);
    return at < 0 ? nullptr : segment->row(static_cast<size_t>(at));
  }
  size_t Live() const { return segment->rows() - removed.size() + added.size(); }
  float Distance(const float* q, const float* v) const {
    return 1.0f - InnerProduct(q, v, static_cast<size_t>(info.dims));
  }

  Status LoadSegment();
  // Rows ScanEmbeddings left out (damaged embeddings): one notice, as every loader gives.
  void NoteDamaged(const std::vector<std::pair<int64_t, std::string>>& damaged) {
    if (damaged.empty()) return;
    VectorTable t;
    t.damaged = damaged;
    notices += DamagedRowsNotice(t, location) + "\n";
  }
  // Replaces a segment found damaged while answering (in memory: reloads it).
  Status RebuildSegment(const std::string& why);
  Status BuildSegment(const std::string& path, const std::string& why);
  Status ApplyChanges(const std::vector<StoreChange>& changes);
  Status LoadMetadata();
  Status CatchUpSegment();
  // `shared`: searches run meanwhile (Refresh): the file is written under the read lock and
  // only the swap takes the write lock. The caller holds feed_mu (no change lands meanwhile).
  // `force`: fold in any change at all (a segment in memory is rebuilt in memory).
  Status CompactIfNeeded(bool shared, bool force = false);
  // Calls emit(id, vector) for every live row in id order: the segment's rows minus the
  // deleted, merged with the added. Caller holds mu.
  Result<int64_t> EmitLive(const std::function<Status(int64_t, const float*)>& emit) const {
    auto a = added.begin();
    for (size_t i = 0; i < segment->rows(); ++i) {
      const int64_t id = segment->ids()[i];
      for (; a != added.end() && a->first < id; ++a)
        NL_RETURN_IF_ERROR(emit(a->first, a->second.data()));
      if (!removed.count(id)) NL_RETURN_IF_ERROR(emit(id, segment->row(i)));
    }
    for (; a != added.end(); ++a) NL_RETURN_IF_ERROR(emit(a->first, a->second.data()));
    return change_id;
  }
  void OpenIndex();
  void OpenNodeIndex();
  Status BuildNodeIndex();
  void MarkIndexStale(int64_t from_change);
  // index_extras from index_stale: the stale rows that exist now.
  void CollectExtras() {
    index_extras.clear();
    for (int64_t id : index_stale) {
      if (Vector(id) != nullptr) index_extras.insert(id);
    }
  }
  std::vector<IdNeighbor> Exact(const float* q, int k, const IdSelector* sel) const;
  std::vector<IdNeighbor> Graph(const float* q, const QueryOptions& o, const IdSelector* sel,
                                IndexSearchStats* st) const;
};

// ---- Opening: the segment ----

Status Collection::Impl::BuildSegment(const std::string& path, const std::string& why) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::pair<int64_t, std::string>> damaged;
  Status st =
      VectorSegment::Write(path, info.dims, store_id, [&](const auto& emit) -> Result<int64_t> {
        int64_t snapshot = 0;
        std::lock_guard<std::mutex> lock(store_mu);
        NL_RETURN_IF_ERROR(store->ScanEmbeddings(emit, &snapshot, &damaged));
        return snapshot;
      });
  NL_RETURN_IF_ERROR(st);
  NL_ASSIGN_OR_RETURN(segment, VectorSegment::Map(path, info.dims));
  // A first build is routine (-v says so); a rebuild means something was wrong.
  (why == "built" ? log : notices) += "vector segment " + why + ": " +
                                      std::to_string(segment->rows()) + " rows in " +
                                      Seconds(SecondsSince(t0)) + "\n";
  NoteDamaged(damaged);
  return Status::OK();
}

// Lock order everywhere: feed_mu, then mu, then store_mu.
Status Collection::Impl::RebuildSegment(const std::string& why) {
  std::lock_guard<std::mutex> feed_lock(feed_mu);
  std::unique_lock<std::shared_mutex> lock(mu);
  removed.clear();
  added.clear();
  if (segment->path().empty()) {
    NL_RETURN_IF_ERROR(LoadSegment());
  } else {
    NL_RETURN_IF_ERROR(BuildSegment(segment->path(), "rebuilt (" + why + ")"));
  }
  std::fprintf(stderr, "nearlabel: notice: vector segment %s was damaged (%s): rebuilt\n",
               segment->path().c_str(), why.c_str());
  return CatchUpSegment();
}

Status Collection::Impl::LoadSegment() {
  std::string path;
  if (feed != nullptr && options.write_segment) {
    if (!options.cache_dir.empty()) {
      std::error_code ec;
      fs::create_directories(options.cache_dir, ec);
      path = (fs::path(options.cache_dir) / store_id).string() + ".vectors";
    } else if (!IsPostgresUri(location)) {
      path = SegmentPath(location);
    }
    if (!path.empty() && !DirectoryWritable(path)) path.clear();
  }
  if (!path.empty()) {
    NL_ASSIGN_OR_RETURN(int64_t newest, feed->LastChangeId());
    auto mapped = VectorSegment::Map(path, info.dims);
    std::string why = "built";
    if (mapped.ok()) {
      if ((*mapped)->store_id() != store_id) {
        why = "rebuilt (it belonged to another store)";
      } else if ((*mapped)->change_id() > newest) {
        why = "rebuilt (it is newer than the store: a restored backup?)";
      } else {
        segment = std::move(*mapped);
        return Status::OK();
      }
    } else if (!(mapped.status().code() == Status::Code::kNotFound)) {
      why = "rebuilt (" + mapped.status().message() + ")";
    }
    return BuildSegment(path, why);
  }
  // In memory: a read-only directory, a format-2 store, PostgreSQL.
  std::vector<int64_t> ids;
  std::vector<float> vectors;
  std::vector<std::pair<int64_t, std::string>> damaged;
  int64_t snapshot = 0;
  NL_RETURN_IF_ERROR(store->ScanEmbeddings(
      [&](int64_t id, const float* v) {
        ids.push_back(id);
        vectors.insert(vectors.end(), v, v + info.dims);
        return Status::OK();
      },
      &snapshot, &damaged));
  segment = VectorSegment::InMemory(info.dims, snapshot, std::move(ids), std::move(vectors));
  NoteDamaged(damaged);
  return Status::OK();
}

// Applies changes in order; each is idempotent (a row loaded with the snapshot and met again
// among the later changes is already there).
Status Collection::Impl::ApplyChanges(const std::vector<StoreChange>& changes) {
  for (const StoreChange& c : changes) {
    if (c.change_id > change_id) {
      if (c.deleted) {
        if (added.erase(c.item_id) == 0 && segment->Find(c.item_id) >= 0) {
          removed.insert(c.item_id);
        }
      } else if (c.present && Vector(c.item_id) == nullptr) {
        if (static_cast<int>(c.embedding.size()) != info.dims ||
            !EmbeddingProblem(c.embedding.data(), c.embedding.size()).empty()) {
          notices += "row " + std::to_string(c.item_id) + " has a damaged embedding: left out\n";
        } else {
          added[c.item_id] = c.embedding;
        }
      }
      if (options.keep_metadata) {
        if (c.deleted) {
          meta.erase(c.item_id);
        } else if (c.present) {
          meta[c.item_id] = {c.source, c.metadata};
        }
      }
      change_id = c.change_id;
    }
  }
  return Status::OK();
}

Status Collection::Impl::CatchUpSegment() {
  if (!feed) return Status::OK();
  change_id = segment->change_id();
  for (;;) {
    NL_ASSIGN_OR_RETURN(auto changes, feed->ChangesAfter(change_id, 4096));
    NL_RETURN_IF_ERROR(ApplyChanges(changes));
    if (changes.size() < 4096) return Status::OK();
  }
}

// Rewrites the segment (its rows minus the deleted plus the added) when the overlay has grown
// past its bound and the file can be written: memory and catch-up stay bounded.
Status Collection::Impl::CompactIfNeeded(bool shared, bool force) {
  std::shared_lock<std::shared_mutex> read(mu, std::defer_lock);
  if (shared) read.lock();
  const size_t overlay = added.size() + removed.size();
  const size_t bound = force ? 0 : std::max(options.max_overlay, segment->rows() / 10);
  if (overlay <= bound || (segment->path().empty() && !force)) return Status::OK();
  const auto t0 = std::chrono::steady_clock::now();
  const std::string path = segment->path();
  Status st = path.empty() ? Status::Unsupported("held in memory")
                           : VectorSegment::Write(path, info.dims, store_id,
                                                  [&](const auto& emit) { return EmitLive(emit); });
  // Where no file can be written, Vectors() (`force`) still needs one segment: in memory.
  std::vector<int64_t> ids;
  std::vector<float> vectors;
  int64_t at = change_id;
  if (!st.ok() && force) {
    NL_ASSIGN_OR_RETURN(at, EmitLive([&](int64_t id, const float* v) {
                          ids.push_back(id);
                          vectors.insert(vectors.end(), v, v + info.dims);
                          return Status::OK();
                        }));
  }
  if (shared) read.unlock();
  std::unique_lock<std::shared_mutex> write(mu, std::defer_lock);
  if (shared) write.lock();
  if (!st.ok() && !force) {  // the overlay still answers; say why the file was not rewritten
    notices += "vector segment not rewritten: " + st.message() + "\n";
    return Status::OK();
  }
  if (st.ok()) {
    NL_ASSIGN_OR_RETURN(segment, VectorSegment::Map(path, info.dims));
    log += "vector segment rewritten with " + std::to_string(overlay) + " changed rows in " +
           Seconds(SecondsSince(t0)) + "\n";
  } else {
    segment = VectorSegment::InMemory(info.dims, at, std::move(ids), std::move(vectors));
  }
  added.clear();
  removed.clear();
  return Status::OK();
}

// Every row's source and metadata (a snapshot; the changes after it are applied on top).
Status Collection::Impl::LoadMetadata() {
  const bool pg = IsPostgresUri(location);
  NL_ASSIGN_OR_RETURN(auto r, store->Execute(std::string("SELECT id, source, ") +
                                             (pg ? "metadata::text" : "metadata") + " FROM items"));
  for (const auto& row : r.front().rows) {
    if (!std::holds_alternative<int64_t>(row[0])) continue;
    meta[std::get<int64_t>(row[0])] = {SqlValueText(row[1]), SqlValueText(row[2])};
  }
  return Status::OK();
}

// ---- Opening: the index ----

// A node's own index (a shared store keeps none): the newest "<id>.hnsw-<change>-<rows>" in
// the cache directory, else built now from the vectors (and saved there). The name is the
// commit: the file is complete when it has it (HnswIndex::Save renames), and it says which
// change the index holds and how many live rows.
void Collection::Impl::OpenNodeIndex() {
  if (!options.build_index) return;
  if (!options.cache_dir.empty()) {
    const std::string prefix = store_id + ".hnsw-";
    int64_t best_change = -1;
    size_t best_rows = 0;
    std::string best;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(options.cache_dir, ec)) {
      const std::string name = e.path().filename().string();
      long long change = 0;
      unsigned long long rows = 0;
      if (name.rfind(prefix, 0) != 0 ||
          std::sscanf(name.c_str() + prefix.size(), "%lld-%llu", &change, &rows) != 2) {
        continue;
      }
      if (change > best_change && change <= change_id) {
        best_change = change, best_rows = rows, best = e.path().string();
      }
    }
    if (!best.empty()) {
      auto mapped = HnswIndex::Map(best, info.dims, best_rows, options.index_access);
      if (mapped.ok()) {
        index = std::move(*mapped);
        MarkIndexStale(best_change);
        if (index_stale.size() <= std::max(options.max_index_lag, Live() / 10)) return;
      }
      notices += "rebuilding the node's index (" +
                 (mapped.ok() ? std::string("too far behind") : mapped.status().message()) + ")\n";
      index.reset();
      index_stale.clear();
    }
  }
  Status st = BuildNodeIndex();
  if (!st.ok()) {
    notices += "searching exactly: building the index failed: " + st.message() + "\n";
    index.reset();
  }
}

Status Collection::Impl::BuildNodeIndex() {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<int64_t> ids;
  std::vector<float> vectors;
  for (size_t i = 0; i < segment->rows(); ++i) {
    const int64_t id = segment->ids()[i];
    if (removed.count(id)) continue;
    ids.push_back(id);
    vectors.insert(vectors.end(), segment->row(i), segment->row(i) + info.dims);
  }
  for (const auto& [id, v] : added) {
    ids.push_back(id);
    vectors.insert(vectors.end(), v.begin(), v.end());
  }
  auto built = HnswIndex::Create(info.dims, options.index_params);
  NL_RETURN_IF_ERROR(
      built->Add(ids.data(), vectors.data(), ids.size(), options.index_params.threads));
  index = std::move(built);
  log += "index built over " + std::to_string(ids.size()) + " rows in " +
         Seconds(SecondsSince(t0)) + "\n";
  if (options.cache_dir.empty()) return Status::OK();
  const std::string name =
      store_id + ".hnsw-" + std::to_string(change_id) + "-" + std::to_string(ids.size());
  const std::string path = (fs::path(options.cache_dir) / name).string();
  auto saved = index->Save(path);
  if (!saved.ok()) {
    notices += "the index was not saved in the cache: " + saved.status().message() + "\n";
    return Status::OK();
  }
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(options.cache_dir, ec)) {
    const std::string other = e.path().filename().string();
    if (other != name && other.rfind(store_id + ".hnsw-", 0) == 0) fs::remove(e.path(), ec);
  }
  return Status::OK();
}

// Every row changed after `from_change` is answered from its current vector, not the graph.
void Collection::Impl::MarkIndexStale(int64_t from_change) {
  for (int64_t at = from_change;;) {
    auto changes = feed->ChangesAfter(at, 4096);
    if (!changes.ok()) {
      notices += "searching exactly: " + changes.status().message() + "\n";
      index.reset();
      return;
    }
    for (const StoreChange& c : *changes) index_stale.insert(c.item_id), at = c.change_id;
    if (changes->size() < 4096) break;
  }
  CollectExtras();
}

void Collection::Impl::OpenIndex() {
  if (!options.use_index) return;
  if (store->ingest_queue() != nullptr) return OpenNodeIndex();  // a shared store
  auto state = ReadIndexState(*store);
  if (!state.ok() || !state->exists) return;
  auto fail = [&](const std::string& why) {
    notices += "searching exactly: " + why + "\n";
    index.reset();
  };
  auto mapped = HnswIndex::Map(state->file, info.dims, state->rows, options.index_access);
  if (!mapped.ok()) return fail(mapped.status().message());
  index = std::move(*mapped);
  auto saved_at = store->GetSetting(kIndexChangeId);
  if (!saved_at.ok()) return fail(saved_at.status().message());
  if (!saved_at->empty() && feed) {
    MarkIndexStale(std::atoll(saved_at->c_str()));
    if (!index) return;
  } else {
    // An index saved before the change log existed: compare its ids with the table's.
    const std::vector<int64_t> ids = index->Ids();
    std::unordered_set<int64_t> in_index(ids.begin(), ids.end());
    for (int64_t id : ids) {
      if (Vector(id) == nullptr) index_stale.insert(id);
    }
    for (size_t i = 0; i < segment->rows(); ++i) {
      if (!in_index.count(segment->ids()[i])) index_stale.insert(segment->ids()[i]);
    }
    for (const auto& a : added) {
      if (!in_index.count(a.first)) index_stale.insert(a.first);
    }
    CollectExtras();
  }
  if (index_stale.size() > std::max(options.max_index_lag, Live() / 10)) {
    index_extras.clear();
    return fail("the index is " + std::to_string(index_stale.size()) +
                " rows behind the table; bring it up to date with `nearlabel index build " +
                MaskedLocation(location) + "`");
  }
}

Collection::Collection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Collection::~Collection() = default;

Result<std::unique_ptr<Collection>> Collection::Open(const std::string& location,
                                                     const CollectionOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->location = location;
  NL_ASSIGN_OR_RETURN(impl->store, OpenStore(location, Store::Mode::kReadOnly));
  NL_ASSIGN_OR_RETURN(auto info, impl->store->GetCollection());
  if (!info) {
    return Status::InvalidArgument("store " + MaskedLocation(location) + " is empty: ingest first");
  }
  impl->info = *info;
  NL_ASSIGN_OR_RETURN(impl->store_id, impl->store->GetSetting("store_id"));
  if (impl->store_id.empty()) {
    // A store without an id of its own (PostgreSQL): named by its location.
    impl->store_id = Sha256Hex(MaskedLocation(location)).substr(0, 32);
  }
  auto feed = impl->store->OpenChangeFeed();
  if (feed.ok()) impl->feed = std::move(*feed);
  if (options.keep_metadata) NL_RETURN_IF_ERROR(impl->LoadMetadata());
  NL_RETURN_IF_ERROR(impl->LoadSegment());
  NL_RETURN_IF_ERROR(impl->CatchUpSegment());
  NL_RETURN_IF_ERROR(impl->CompactIfNeeded(false));
  impl->OpenIndex();
  return std::unique_ptr<Collection>(new Collection(std::move(impl)));
}

// ---- The planner ----

// Exact: the selected rows gathered by id when the filter is selective, else one sgemv over
// the whole segment with a row mask; plus the rows added since the segment was written.
std::vector<IdNeighbor> Collection::Impl::Exact(const float* q, int k,
                                                const IdSelector* sel) const {
  std::vector<IdNeighbor> out;
  if (sel != nullptr && sel->count() * 8 < segment->rows()) {
    for (int64_t id : sel->ids()) {
      if (const float* v = Vector(id)) out.push_back({id, Distance(q, v)});
    }
  } else {
    SearchParams p;
    p.k = k;
    if (sel != nullptr || !removed.empty()) {
      // The mask: the filter row by row (a bitmap test), the deleted rows by id (their rows
      // found by binary search, not a hash lookup per row of the segment).
      p.allowed.assign(segment->rows(), 1);
      if (sel != nullptr) {
        for (size_t i = 0; i < segment->rows(); ++i) p.allowed[i] = sel->Allows(segment->ids()[i]);
      }
      for (int64_t id : removed) {
        const long at = segment->Find(id);
        if (at >= 0) p.allowed[static_cast<size_t>(at)] = 0;
      }
    }
    const MatrixView rows{segment->vectors(), segment->rows(), info.dims};
    for (const Neighbor& nb : ExactSearch(rows, q, p)) {
      out.push_back({segment->ids()[nb.row], nb.distance});
    }
    for (const auto& [id, v] : added) {
      if (sel == nullptr || sel->Allows(id)) out.push_back({id, Distance(q, v.data())});
    }
  }
  return out;
}

// The graph walk (filter inside it, rows changed since the save excluded), plus those rows
// exactly; every distance then recomputed from the float32 vector (the graph holds halves).
std::vector<IdNeighbor> Collection::Impl::Graph(const float* q, const QueryOptions& o,
                                                const IdSelector* sel, IndexSearchStats* st) const {
  IndexSearchParams p;
  p.k = o.k;
  p.ef = o.ef;
  p.filter = sel;
  p.exclude = index_stale.empty() ? nullptr : &index_stale;
  std::vector<IdNeighbor> out;
  for (const IdNeighbor& nb : index->Search(q, p, st)) {
    if (const float* v = Vector(nb.id)) out.push_back({nb.id, Distance(q, v)});
  }
  for (int64_t id : index_extras) {
    if (sel != nullptr && !sel->Allows(id)) continue;
    if (const float* v = Vector(id)) out.push_back({id, Distance(q, v)});
  }
  return out;
}

Result<Answer> Collection::Search(const float* query, const QueryOptions& o) const {
  return Search(query, o, false);
}

Result<Answer> Collection::Search(const float* query, const QueryOptions& o, bool rebuilt) const {
  Impl& m = *impl_;
  std::optional<IdSelector> sel;
  if (!o.where_sql.empty()) {
    std::lock_guard<std::mutex> lock(m.store_mu);
    NL_ASSIGN_OR_RETURN(std::vector<int64_t> ids, m.store->SelectIds(o.where_sql));
    sel.emplace(std::move(ids));
  }
  std::shared_lock<std::shared_mutex> lock(m.mu);
  Answer a;
  const size_t live = m.Live();
  a.candidates = sel ? std::min(live, sel->count()) : live;
  if (o.k <= 0 || a.candidates == 0) return a;
  const size_t ef = o.ef > 0 ? static_cast<size_t>(o.ef) : IndexSearchParams::kDefaultEf;
  const bool selective = sel && FilterScanIsCheaper(a.candidates, live, ef);
  std::vector<IdNeighbor> found;
  if (m.index && !o.exact && !selective) {
    found = m.Graph(query, o, sel ? &*sel : nullptr, &a.stats);
    a.plan =
        "HNSW index (m=" + std::to_string(m.index->params().m) + "), " + PlanName(a.stats.plan);
  } else {
    found = m.Exact(query, o.k, sel ? &*sel : nullptr);
    a.stats.plan = sel ? IndexSearchStats::Plan::kExactFiltered : IndexSearchStats::Plan::kExact;
    a.stats.distances = sel ? a.candidates : live;
    a.plan = PlanName(a.stats.plan);
  }
  // One kernel for every plan's distances (sgemv rounds differently): the same rows get the
  // same figures whether the graph or a scan found them.
  for (IdNeighbor& nb : found) nb.distance = m.Distance(query, m.Vector(nb.id));
  std::sort(found.begin(), found.end(), [](const IdNeighbor& x, const IdNeighbor& y) {
    return x.distance < y.distance || (x.distance == y.distance && x.id < y.id);
  });
  found.erase(std::unique(found.begin(), found.end(),
                          [](const IdNeighbor& x, const IdNeighbor& y) { return x.id == y.id; }),
              found.end());
  if (found.size() > static_cast<size_t>(o.k)) found.resize(static_cast<size_t>(o.k));
  lock.unlock();
  // The k answers' metadata, by id; their vectors as the store has them must be the ones
  // ranked (a segment damaged on disk after its checksum was written is caught here).
  if (m.options.keep_metadata) {
    std::shared_lock<std::shared_mutex> read(m.mu);
    for (const IdNeighbor& nb : found) {
      auto row = m.meta.find(nb.id);
      if (row == m.meta.end()) continue;  // deleted since
      a.neighbors.push_back({nb.id, nb.distance, row->second.first, row->second.second});
    }
    return a;
  }
  std::vector<ItemRecord> items;
  {
    std::lock_guard<std::mutex> store_lock(m.store_mu);
    for (const IdNeighbor& nb : found) {
      auto item = m.store->GetItem(nb.id);
      if (item.status().code() == Status::Code::kNotFound) continue;  // deleted since
      if (!item.ok()) return item.status();
      a.neighbors.push_back({nb.id, nb.distance, item->source, item->metadata_json});
      items.push_back(std::move(*item));
    }
  }
  std::vector<int64_t> differ;
  {
    std::shared_lock<std::shared_mutex> read(m.mu);  // never while holding store_mu
    for (const ItemRecord& item : items) {
      const float* v = m.Vector(item.id);
      if (v != nullptr && item.embedding.size() == static_cast<size_t>(m.info.dims) &&
          std::memcmp(v, item.embedding.data(), item.embedding.size() * sizeof(float)) != 0) {
        differ.push_back(item.id);
      }
    }
  }
  if (!differ.empty() && !rebuilt) {
    NL_RETURN_IF_ERROR(
        m.RebuildSegment("row " + std::to_string(differ.front()) + " differs from the store"));
    return Search(query, o, true);
  }
  return a;
}

Result<Collection::Classified> Collection::Classify(const float* query, const QueryOptions& o,
                                                    const std::string& label_field, Vote vote,
                                                    const RejectThresholds* reject,
                                                    const Calibration* calibration) const {
  Classified c;
  NL_ASSIGN_OR_RETURN(c.answer, Search(query, o));
  std::vector<Neighbor> nbs;
  for (const AnswerRow& r : c.answer.neighbors) {
    c.labels.push_back(MetadataField(ParseJson(r.metadata), label_field));
    nbs.push_back({nbs.size(), r.distance});
  }
  c.prediction = VoteLabel(nbs, c.labels, vote);
  c.vote_share = c.prediction.confidence;
  if (calibration && calibration->fitted() && !c.prediction.label.empty()) {
    c.prediction.confidence = calibration->Probability(c.prediction, c.prediction.label);
    c.calibrated = true;
  }
  if (reject && !nbs.empty()) {
    c.reject_threshold = reject->For(c.labels.front());
    if (nbs.front().distance > c.reject_threshold) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "nearest distance %.4f > %.4f, the %.0fth percentile for '",
                    nbs.front().distance, c.reject_threshold, 100 * reject->quantile);
      c.rejected_why = buf + c.labels.front() + "'";
      c.voted_label = c.prediction.label;
      c.prediction.label = "unknown";
      c.prediction.confidence = 0;
      c.unknown = true;
    }
  }
  return c;
}

Result<size_t> Collection::Refresh() {
  Impl& m = *impl_;
  if (!m.feed) return size_t{0};
  std::lock_guard<std::mutex> feed_lock(m.feed_mu);
  size_t applied = 0;
  for (;;) {
    int64_t from;
    {
      std::shared_lock<std::shared_mutex> lock(m.mu);
      from = m.change_id;
    }
    NL_ASSIGN_OR_RETURN(auto changes, m.feed->ChangesAfter(from, 4096));
    if (changes.empty()) return applied;
    std::unique_lock<std::shared_mutex> lock(m.mu);
    for (const StoreChange& c : changes) {
      if (c.change_id <= m.change_id) continue;
      m.index_stale.insert(c.item_id);
      m.index_extras.erase(c.item_id);
    }
    NL_RETURN_IF_ERROR(m.ApplyChanges(changes));
    for (const StoreChange& c : changes) {
      if (m.index && m.Vector(c.item_id) != nullptr) m.index_extras.insert(c.item_id);
    }
    applied += changes.size();
    lock.unlock();
    NL_RETURN_IF_ERROR(m.CompactIfNeeded(true));
    if (changes.size() < 4096) return applied;
  }
}

Result<std::shared_ptr<const VectorSegment>> Collection::Vectors() {
  NL_RETURN_IF_ERROR(Refresh().status());
  Impl& m = *impl_;
  std::lock_guard<std::mutex> feed_lock(m.feed_mu);  // no change lands meanwhile
  NL_RETURN_IF_ERROR(m.CompactIfNeeded(true, true));
  std::shared_lock<std::shared_mutex> lock(m.mu);
  return std::shared_ptr<const VectorSegment>(m.segment);
}

Result<bool> Collection::WaitForChanges(int timeout_ms) {
  if (!impl_->feed) {
    std::this_thread::sleep_for(std::chrono::milliseconds(timeout_ms));
    return false;
  }
  // In slices, so that a Refresh (a server applying its own write) never waits behind a
  // whole wait for the feed's connection.
  constexpr int kSliceMs = 20;
  for (int waited = 0; waited < timeout_ms; waited += kSliceMs) {
    std::lock_guard<std::mutex> lock(impl_->feed_mu);
    NL_ASSIGN_OR_RETURN(bool woke,
                        impl_->feed->WaitForChanges(std::min(kSliceMs, timeout_ms - waited)));
    if (woke) return true;
  }
  return false;
}

Result<ItemRecord> Collection::GetItem(int64_t id) const {
  std::lock_guard<std::mutex> lock(impl_->store_mu);
  return impl_->store->GetItem(id);
}

const CollectionInfo& Collection::info() const { return impl_->info; }
const std::string& Collection::location() const { return impl_->location; }

size_t Collection::size() const {
  std::shared_lock<std::shared_mutex> lock(impl_->mu);
  return impl_->Live();
}

CollectionState Collection::state() const {
  std::shared_lock<std::shared_mutex> lock(impl_->mu);
  const Impl& m = *impl_;
  CollectionState s;
  s.rows = m.Live();
  s.segment_rows = m.segment->rows();
  s.segment = m.segment->path();
  s.overlay_added = m.added.size();
  s.overlay_removed = m.removed.size();
  s.change_id = m.change_id;
  s.index_rows = m.index ? m.index->size() : 0;
  s.index_lag = m.index ? m.index_stale.size() : 0;
  s.notices = m.notices;
  s.log = m.log;
  s.follows = m.feed != nullptr;
  return s;
}

}  // namespace nearlabel
