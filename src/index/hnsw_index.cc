// HnswIndex: Debian's hnswlib (0.6.2) holds the graph, inserts (its heuristic neighbour
// selection, concurrent addPoint) and its file format. Ours are:
//  - the vector copy in the graph is IEEE half precision: half the memory and half the bytes
//    per distance (a dot product of unit vectors moves by ~1e-5; callers that show distances
//    recompute them from the store's float32 vectors);
//  - a walk over a large index waits on memory latency, one scattered row at a time: ours
//    computes a node's fresh neighbours four rows side by side (InnerProductHalf4), which
//    measured 3x the queries/s of one row at a time on 100k x 1024 (bench/search);
//  - the distance: 1 - dot product with the AVX-512 kernel chosen at run time (hnswlib's own
//    is compiled for the build machine's baseline, SSE in Debian's binaries);
//  - the search walk: hnswlib 0.6.2 cannot filter, so the base-layer walk is written here
//    (the algorithm of its searchBaseLayerST) with the filter inside it, prefetching a node's
//    unvisited neighbours before computing their distances;
//  - the save: hnswlib writes through an unchecked ofstream, so the file is written to a
//    temporary name, its size checked against what the graph must occupy, fsynced, hashed
//    and renamed.
// PatchBankIndex (anomaly.h) is at the end: hnswlib 0.6.2's headers define non-inline
// functions, so this is the one file that may include them.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <queue>
#include <thread>

#include <hnswlib/hnswlib.h>
#include <xmmintrin.h>

#include "common/crash_point.h"
#include "common/sha256.h"
#include "nearlabel/anomaly.h"
#include "nearlabel/index.h"
#include "search/parallel.h"
#include "search/simd.h"

namespace nearlabel {
namespace {

using Graph = hnswlib::HierarchicalNSW<float>;
using hnswlib::tableint;

// Cosine distance of unit vectors stored as halves, for hnswlib's inserts (both sides are
// stored vectors; searches compare a float query with halves, see Impl::Distance).
class HalfUnitInnerProductSpace : public hnswlib::SpaceInterface<float> {
 public:
  explicit HalfUnitInnerProductSpace(size_t dims) : dims_(dims) {}
  size_t get_data_size() override { return dims_ * sizeof(uint16_t); }
  hnswlib::DISTFUNC<float> get_dist_func() override { return &Distance; }
  void* get_dist_func_param() override { return &dims_; }

 private:
  static float Distance(const void* a, const void* b, const void* dims) {
    return 1.0f - InnerProductHalfHalf(static_cast<const uint16_t*>(a),
                                       static_cast<const uint16_t*>(b),
                                       *static_cast<const size_t*>(dims));
  }
  size_t dims_;
};

// Moves the graph's base layer (links and vectors of every node, one block hnswlib mallocs)
// into memory that asks the kernel for 2 MiB pages. A walk touches a few thousand nodes
// scattered over the block: with 4 KiB pages nearly every one is also a TLB miss and a page
// walk. Debian's kernel gives huge pages to madvise()d memory only.
void MoveBaseLayerToHugePages(Graph& g) {
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t bytes = (g.max_elements_ * g.size_data_per_element_ + kHuge - 1) / kHuge * kHuge;
  void* block = std::aligned_alloc(kHuge, bytes);
  if (block == nullptr) return;  // keep hnswlib's block: slower, not wrong
  ::madvise(block, bytes, MADV_HUGEPAGE);
  std::memcpy(block, g.data_level0_memory_, g.cur_element_count * g.size_data_per_element_);
  std::free(g.data_level0_memory_);  // hnswlib frees the block with free() too
  g.data_level0_memory_ = static_cast<char*>(block);
}

int DefaultThreads(int threads) {
  if (threads > 0) return threads;
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// A walk visits about this many nodes per unit of ef on the base layer (measured by
// bench/search on M=16 graphs); used to decide between walking and scanning under a filter.
constexpr double kWalkDistancesPerEf = 16.0;

using Candidate = std::pair<float, tableint>;  // (distance, internal id)
using MaxHeap = std::priority_queue<Candidate>;
using MinHeap = std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>>;

}  // namespace

const char* PlanName(IndexSearchStats::Plan plan) {
  switch (plan) {
    case IndexSearchStats::Plan::kGraph:
      return "graph";
    case IndexSearchStats::Plan::kGraphWidened:
      return "graph (ef widened)";
    case IndexSearchStats::Plan::kExactFiltered:
      return "exact scan of the filtered rows";
    case IndexSearchStats::Plan::kExact:
      return "exact scan";
  }
  return "?";
}

struct HnswIndex::Impl {
  explicit Impl(int dims) : space(static_cast<size_t>(dims)) {}
  HalfUnitInnerProductSpace space;
  std::unique_ptr<Graph> graph;

  const uint16_t* Data(tableint id) const {
    return reinterpret_cast<const uint16_t*>(graph->getDataByInternalId(id));
  }
  float Distance(const float* q, tableint id) const {
    return 1.0f -
           InnerProductHalf(q, reinterpret_cast<const uint16_t*>(graph->getDataByInternalId(id)),
                            graph->data_size_ / sizeof(uint16_t));
  }
  bool Passes(tableint id, const IndexFilter* f) const {
    return !graph->isMarkedDeleted(id) && (f == nullptr || f->allowed[id]);
  }

  // Greedy descent through the upper layers to the base layer's entry point.
  tableint Descend(const float* q, size_t* distances) const {
    tableint cur = graph->enterpoint_node_;
    float cur_dist = Distance(q, cur);
    ++*distances;
    for (int level = graph->maxlevel_; level > 0; --level) {
      for (bool changed = true; changed;) {
        changed = false;
        const unsigned* list = graph->get_linklist(cur, level);
        const int size = graph->getListCount(const_cast<unsigned*>(list));
        const tableint* links = reinterpret_cast<const tableint*>(list + 1);
        for (int i = 0; i < size; ++i) {
          const float d = Distance(q, links[i]);
          ++*distances;
          if (d < cur_dist) cur_dist = d, cur = links[i], changed = true;
        }
      }
    }
    return cur;
  }

  // Best-first walk of the base layer keeping the `ef` nearest nodes that pass the filter.
  // Nodes that fail it are still walked through (they connect the graph) but never kept.
  MaxHeap WalkBaseLayer(const float* q, tableint entry, size_t ef, const IndexFilter* filter,
                        size_t* distances) const {
    hnswlib::VisitedList* vl = graph->visited_list_pool_->getFreeVisitedList();
    hnswlib::vl_type* visited = vl->mass;
    const hnswlib::vl_type tag = vl->curV;
    MinHeap candidates;
    MaxHeap kept;
    const float d0 = Distance(q, entry);
    ++*distances;
    visited[entry] = tag;
    candidates.emplace(d0, entry);
    if (Passes(entry, filter)) kept.emplace(d0, entry);
    tableint fresh[2048];
    while (!candidates.empty()) {
      const Candidate c = candidates.top();
      if (kept.size() >= ef && c.first > kept.top().first) break;
      candidates.pop();
      const unsigned* list = graph->get_linklist0(c.second);
      const size_t size = std::min<size_t>(graph->getListCount(const_cast<unsigned*>(list)), 2048);
      const tableint* links = reinterpret_cast<const tableint*>(list + 1);
      size_t n = 0;
      for (size_t i = 0; i < size; ++i) {
        const tableint id = links[i];
        if (visited[id] == tag) continue;
        visited[id] = tag;
        fresh[n++] = id;
        _mm_prefetch(graph->getDataByInternalId(id), _MM_HINT_T0);
      }
      *distances += n;
      // Four rows at a time: their memory reads overlap (see InnerProductHalf4).
      const size_t dims = graph->data_size_ / sizeof(uint16_t);
      float dist[2048];
      size_t i = 0;
      for (; i + 4 <= n; i += 4) {
        const uint16_t* rows[4];
        for (int j = 0; j < 4; ++j) rows[j] = Data(fresh[i + j]);
        InnerProductHalf4(q, rows, dims, dist + i);
        for (int j = 0; j < 4; ++j) dist[i + j] = 1.0f - dist[i + j];
      }
      for (; i < n; ++i) dist[i] = Distance(q, fresh[i]);
      for (size_t i = 0; i < n; ++i) {
        const float d = dist[i];
        if (kept.size() < ef || d < kept.top().first) {
          candidates.emplace(d, fresh[i]);
          if (Passes(fresh[i], filter)) {
            kept.emplace(d, fresh[i]);
            if (kept.size() > ef) kept.pop();
          }
        }
      }
    }
    graph->visited_list_pool_->releaseVisitedList(vl);
    return kept;
  }

  MaxHeap Scan(const float* q, size_t k, const IndexFilter* filter, size_t* distances) const {
    MaxHeap kept;
    std::vector<tableint> rows;
    for (tableint id = 0; id < graph->cur_element_count; ++id) {
      if (Passes(id, filter)) rows.push_back(id);
    }
    // The rows are scattered through the graph's memory: read four side by side.
    const size_t dims = graph->data_size_ / sizeof(uint16_t);
    auto keep = [&](float d, tableint id) {
      if (kept.size() < k) {
        kept.emplace(d, id);
      } else if (d < kept.top().first) {
        kept.pop();
        kept.emplace(d, id);
      }
    };
    size_t i = 0;
    for (; i + 4 <= rows.size(); i += 4) {
      const uint16_t* data[4] = {Data(rows[i]), Data(rows[i + 1]), Data(rows[i + 2]),
                                 Data(rows[i + 3])};
      float dot[4];
      InnerProductHalf4(q, data, dims, dot);
      for (int j = 0; j < 4; ++j) keep(1.0f - dot[j], rows[i + j]);
    }
    for (; i < rows.size(); ++i) keep(Distance(q, rows[i]), rows[i]);
    *distances += rows.size();
    return kept;
  }
};

HnswIndex::HnswIndex(int dims, const IndexBuildParams& params)
    : dims_(dims), params_(params), impl_(std::make_unique<Impl>(dims)) {}
HnswIndex::~HnswIndex() = default;

std::unique_ptr<HnswIndex> HnswIndex::Create(int dims, const IndexBuildParams& params) {
  std::unique_ptr<HnswIndex> index(new HnswIndex(dims, params));
  index->impl_->graph =
      std::make_unique<Graph>(&index->impl_->space, 1024, params.m, params.ef_construction);
  MoveBaseLayerToHugePages(*index->impl_->graph);
  return index;
}

Status HnswIndex::Add(const int64_t* ids, const float* vectors, size_t n, int threads) {
  Graph& g = *impl_->graph;
  if (g.cur_element_count + n > g.max_elements_) {
    try {
      g.resizeIndex(std::max(g.cur_element_count + n, g.max_elements_ * 3 / 2));
      MoveBaseLayerToHugePages(g);
    } catch (const std::exception& e) {
      return Status::Internal(std::string("growing the index: ") + e.what());
    }
  }
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::string error;
  std::mutex error_mu;
  auto work = [&] {
    std::vector<uint16_t> half(static_cast<size_t>(dims_));
    for (size_t i; !failed && (i = next++) < n;) {
      try {
        FloatToHalf(vectors + i * static_cast<size_t>(dims_), half.data(), half.size());
        g.addPoint(half.data(), static_cast<size_t>(ids[i]));
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(error_mu);
        error = "adding row " + std::to_string(ids[i]) + " to the index: " + e.what();
        failed = true;
      }
    }
  };
  // The first insert sets the entry point; start the workers after it.
  const int nthreads = std::min<int>(DefaultThreads(threads), static_cast<int>(n));
  std::vector<std::thread> pool;
  for (int t = 1; t < nthreads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (failed) return Status::Internal(error);
  return Status::OK();
}

size_t HnswIndex::Remove(const std::vector<int64_t>& ids) {
  size_t removed = 0;
  for (int64_t id : ids) {
    auto it = impl_->graph->label_lookup_.find(static_cast<size_t>(id));
    if (it == impl_->graph->label_lookup_.end() || impl_->graph->isMarkedDeleted(it->second)) {
      continue;
    }
    impl_->graph->markDeletedInternal(it->second);
    ++removed;
  }
  return removed;
}

IndexFilter HnswIndex::MakeFilter(const std::vector<int64_t>& ids) const {
  const Graph& g = *impl_->graph;
  IndexFilter f;
  f.allowed.assign(g.cur_element_count, 0);
  for (int64_t id : ids) {
    auto it = g.label_lookup_.find(static_cast<size_t>(id));
    if (it == g.label_lookup_.end() || g.isMarkedDeleted(it->second) || f.allowed[it->second]) {
      continue;
    }
    f.allowed[it->second] = 1;
    ++f.count;
  }
  return f;
}

std::vector<IdNeighbor> HnswIndex::Search(const float* query, const IndexSearchParams& params,
                                          IndexSearchStats* stats) const {
  IndexSearchStats local;
  IndexSearchStats& st = stats ? *stats : local;
  st = IndexSearchStats();
  const Graph& g = *impl_->graph;
  const size_t live = size();
  const size_t allowed = params.filter ? params.filter->count : live;
  if (params.k <= 0 || allowed == 0) return {};
  const size_t k = static_cast<size_t>(params.k);
  size_t ef = std::max<size_t>(k, params.ef > 0 ? params.ef : IndexSearchParams::kDefaultEf);
  st.ef_used = static_cast<int>(ef);

  MaxHeap kept;
  // Under a filter the walk visits about ef/selectivity nodes; scanning visits `allowed`.
  const double selectivity = static_cast<double>(allowed) / static_cast<double>(live);
  const bool scan = params.exact ||
                    (params.filter != nullptr && static_cast<double>(allowed) * selectivity <=
                                                     kWalkDistancesPerEf * static_cast<double>(ef));
  if (scan) {
    st.plan =
        params.filter ? IndexSearchStats::Plan::kExactFiltered : IndexSearchStats::Plan::kExact;
    kept = impl_->Scan(query, k, params.filter, &st.distances);
  } else {
    const tableint entry = impl_->Descend(query, &st.distances);
    for (;;) {
      kept = impl_->WalkBaseLayer(query, entry, ef, params.filter, &st.distances);
      if (kept.size() >= std::min(k, allowed)) break;
      // Too few rows passed (a filter whose rows the walk cannot reach): widen, and in the
      // end scan, so that k rows come back whenever k rows are allowed.
      if (ef >= live) {
        st.plan = IndexSearchStats::Plan::kExactFiltered;
        kept = impl_->Scan(query, k, params.filter, &st.distances);
        break;
      }
      ef = std::min(live, ef * 4);
      st.ef_used = static_cast<int>(ef);
      st.plan = IndexSearchStats::Plan::kGraphWidened;
    }
  }
  while (kept.size() > k) kept.pop();
  std::vector<IdNeighbor> out(kept.size());
  for (size_t i = out.size(); i-- > 0;) {
    out[i] = {static_cast<int64_t>(g.getExternalLabel(kept.top().second)), kept.top().first};
    kept.pop();
  }
  return out;
}

std::vector<int64_t> HnswIndex::Ids() const {
  const Graph& g = *impl_->graph;
  std::vector<int64_t> ids;
  ids.reserve(size());
  for (tableint i = 0; i < g.cur_element_count; ++i) {
    if (!g.isMarkedDeleted(i)) ids.push_back(static_cast<int64_t>(g.getExternalLabel(i)));
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

size_t HnswIndex::size() const {
  return impl_->graph->cur_element_count - impl_->graph->num_deleted_;
}

size_t HnswIndex::MemoryBytes() const {
  const Graph& g = *impl_->graph;
  size_t bytes = g.max_elements_ * (g.size_data_per_element_ + sizeof(void*) + sizeof(int) +
                                    sizeof(hnswlib::vl_type) + sizeof(std::mutex));
  for (tableint i = 0; i < g.cur_element_count; ++i) {
    bytes += static_cast<size_t>(g.element_levels_[i]) * g.size_links_per_element_;
  }
  // label_lookup_: an unordered_map node and bucket per row.
  bytes += g.label_lookup_.size() * (sizeof(void*) * 2 + 16) +
           g.label_lookup_.bucket_count() * sizeof(void*);
  return bytes;
}

namespace {

// The size hnswlib's saveIndex must produce for `g` (its header is 13 fixed fields).
uint64_t ExpectedFileSize(const Graph& g) {
  uint64_t size = 6 * sizeof(size_t) + sizeof(int) + sizeof(tableint) + 3 * sizeof(size_t) +
                  sizeof(double) + sizeof(size_t);
  size += static_cast<uint64_t>(g.cur_element_count) * g.size_data_per_element_;
  for (tableint i = 0; i < g.cur_element_count; ++i) {
    size += sizeof(unsigned) +
            (g.element_levels_[i] > 0 ? g.size_links_per_element_ * g.element_levels_[i] : 0);
  }
  return size;
}

Status SyncPath(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) return Status::IOError("cannot open " + path + " to sync it");
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Status::IOError("fsync of " + path + " failed");
  return Status::OK();
}

}  // namespace

Result<std::string> HnswIndex::Save(const std::string& path) const {
  namespace fs = std::filesystem;
  const Graph& g = *impl_->graph;
  const fs::path target(path);
  const std::string dir = target.has_parent_path() ? target.parent_path().string() : ".";
  const std::string tmp =
      dir + "/." + target.filename().string() + ".tmp-" + std::to_string(::getpid());
  auto fail = [&](Status st) {
    std::error_code ec;
    fs::remove(tmp, ec);
    return st;
  };
  try {
    const_cast<Graph&>(g).saveIndex(tmp);
  } catch (const std::exception& e) {
    return fail(Status::IOError("writing index " + tmp + ": " + e.what()));
  }
  CrashPoint("index-save:written");
  std::error_code ec;
  const uint64_t size = fs::file_size(tmp, ec);
  const uint64_t expected = ExpectedFileSize(g);
  if (ec || size != expected) {
    return fail(Status::IOError("writing index " + tmp + " stopped at " + std::to_string(size) +
                                " of " + std::to_string(expected) + " bytes (disk full?)"));
  }
  Status st = SyncPath(tmp, false);
  if (!st.ok()) return fail(st);
  auto sha = Sha256File(tmp);
  if (!sha.ok()) return fail(sha.status());
  CrashPoint("index-save:synced");
  fs::rename(tmp, target, ec);
  if (ec) return fail(Status::IOError("renaming " + tmp + " to " + path + ": " + ec.message()));
  NL_RETURN_IF_ERROR(SyncPath(dir, true));
  return *sha;
}

Result<std::unique_ptr<HnswIndex>> HnswIndex::Load(const std::string& path, int dims,
                                                   const IndexBuildParams& params,
                                                   const std::string& sha256) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return Status::Corruption("index file " + path + " is missing");
  }
  if (!sha256.empty()) {
    NL_ASSIGN_OR_RETURN(std::string actual, Sha256File(path));
    if (actual != sha256) {
      return Status::Corruption("index file " + path + " does not match its checksum (sha256 " +
                                actual.substr(0, 12) + "..., expected " + sha256.substr(0, 12) +
                                "...)");
    }
  }
  std::unique_ptr<HnswIndex> index(new HnswIndex(dims, params));
  try {
    index->impl_->graph = std::make_unique<Graph>(&index->impl_->space, path, false, 0);
  } catch (const std::exception& e) {
    return Status::Corruption("index file " + path + " cannot be read: " + e.what());
  }
  Graph& g = *index->impl_->graph;
  // hnswlib 0.6.2's loading constructor leaves num_deleted_ uninitialised before counting
  // into it: count again.
  g.num_deleted_ = 0;
  for (tableint i = 0; i < g.cur_element_count; ++i) g.num_deleted_ += g.isMarkedDeleted(i);
  const size_t links_and_label = g.size_links_level0_ + sizeof(size_t);
  if (g.size_data_per_element_ == links_and_label + static_cast<size_t>(dims) * sizeof(float)) {
    return Status::Mismatch("index file " + path +
                            " holds float32 vectors (an earlier nearlabel wrote it); it is "
                            "rebuilt by `nearlabel index build`");
  }
  if (g.size_data_per_element_ != links_and_label + static_cast<size_t>(dims) * sizeof(uint16_t)) {
    return Status::Mismatch("index file " + path + " does not hold " + std::to_string(dims) +
                            "-d vectors");
  }
  MoveBaseLayerToHugePages(g);
  index->params_.m = static_cast<int>(g.M_);
  index->params_.ef_construction = static_cast<int>(g.ef_construction_);
  return index;
}

}  // namespace nearlabel

// ---- PatchBankIndex: hnswlib's own L2 space over an anomaly model's bank ----
// The graph travels inside the model's blob: hnswlib saves and loads only through a file
// name, so the bytes pass through an anonymous in-memory file (memfd) named by /proc/self/fd.
namespace nearlabel {
namespace {

// An anonymous file that lives as long as this object, reachable by path.
class MemFile {
 public:
  MemFile() : fd_(static_cast<int>(::memfd_create("nearlabel-patch-bank", MFD_CLOEXEC))) {}
  ~MemFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }
  bool Write(const std::string& bytes) {
    size_t at = 0;
    while (at < bytes.size()) {
      const ssize_t n = ::pwrite(fd_, bytes.data() + at, bytes.size() - at, static_cast<off_t>(at));
      if (n <= 0) return false;
      at += static_cast<size_t>(n);
    }
    return true;
  }
  bool Read(std::string* bytes) {
    const off_t size = ::lseek(fd_, 0, SEEK_END);
    if (size < 0) return false;
    bytes->assign(static_cast<size_t>(size), '\0');
    size_t at = 0;
    while (at < bytes->size()) {
      const ssize_t n =
          ::pread(fd_, bytes->data() + at, bytes->size() - at, static_cast<off_t>(at));
      if (n <= 0) return false;
      at += static_cast<size_t>(n);
    }
    return true;
  }

 private:
  int fd_;
};

}  // namespace

struct PatchBankIndex::Impl {
  explicit Impl(int dims) : space(static_cast<size_t>(dims)) {}
  hnswlib::L2Space space;
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> graph;
};

PatchBankIndex::PatchBankIndex(int dims, size_t rows) : dims_(dims), rows_(rows) {
  impl_ = std::make_unique<Impl>(dims);
}
PatchBankIndex::~PatchBankIndex() = default;

std::unique_ptr<PatchBankIndex> PatchBankIndex::Build(const float* bank, size_t rows, int dims,
                                                      const PatchBankIndexParams& params) {
  std::unique_ptr<PatchBankIndex> index(new PatchBankIndex(dims, rows));
  index->impl_->graph = std::make_unique<hnswlib::HierarchicalNSW<float>>(
      &index->impl_->space, std::max<size_t>(rows, 1), static_cast<size_t>(params.m),
      static_cast<size_t>(params.ef_construction), /*random_seed=*/100);
  auto& g = *index->impl_->graph;
  g.setEf(static_cast<size_t>(std::max(params.ef, 1)));
  if (rows > 0) g.addPoint(bank, 0);  // the entry point first, then the rest in parallel
  ParallelFor(
      rows > 0 ? rows - 1 : 0,
      [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) {
          g.addPoint(bank + (i + 1) * static_cast<size_t>(dims), i + 1);
        }
      },
      256);
  return index;
}

Result<std::string> PatchBankIndex::Serialize() const {
  MemFile f;
  if (!f.ok()) return Status::IOError("memfd_create failed: cannot serialise the patch index");
  try {
    impl_->graph->saveIndex(f.path());
  } catch (const std::exception& e) {
    return Status::IOError(std::string("saving the patch index: ") + e.what());
  }
  std::string bytes;
  if (!f.Read(&bytes)) return Status::IOError("reading the saved patch index back failed");
  return bytes;
}

Result<std::unique_ptr<PatchBankIndex>> PatchBankIndex::Parse(const std::string& bytes, int dims,
                                                              size_t rows, int ef) {
  MemFile f;
  if (!f.ok() || !f.Write(bytes)) {
    return Status::IOError("memfd_create failed: cannot load the patch index");
  }
  std::unique_ptr<PatchBankIndex> index(new PatchBankIndex(dims, rows));
  try {
    index->impl_->graph = std::make_unique<hnswlib::HierarchicalNSW<float>>(&index->impl_->space,
                                                                            f.path(), false, rows);
  } catch (const std::exception& e) {
    return Status::Corruption(std::string("patch index cannot be read: ") + e.what());
  }
  auto& g = *index->impl_->graph;
  g.setEf(static_cast<size_t>(std::max(ef, 1)));
  if (g.cur_element_count != rows || g.data_size_ != static_cast<size_t>(dims) * sizeof(float)) {
    return Status::Corruption("patch index holds " + std::to_string(g.cur_element_count) +
                              " rows of " + std::to_string(g.data_size_ / sizeof(float)) +
                              " dims, the bank " + std::to_string(rows) + " of " +
                              std::to_string(dims));
  }
  return index;
}

void PatchBankIndex::Nearest(const float* queries, size_t nq, std::vector<float>* distance) const {
  distance->assign(nq, std::numeric_limits<float>::infinity());
  if (rows_ == 0) return;
  auto& g = *impl_->graph;
  ParallelFor(
      nq,
      [&](size_t b, size_t e) {
        for (size_t q = b; q < e; ++q) {
          auto top = g.searchKnn(queries + q * static_cast<size_t>(dims_), 1);
          if (!top.empty()) (*distance)[q] = std::sqrt(std::max(0.0f, top.top().first));
        }
      },
      64);
}

size_t PatchBankIndex::MemoryBytes() const {
  const auto& g = *impl_->graph;
  return g.max_elements_ * g.size_data_per_element_ +
         g.cur_element_count * (sizeof(void*) + g.size_links_per_element_);
}

}  // namespace nearlabel
