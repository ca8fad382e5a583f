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
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <mutex>
#include <queue>
#include <thread>

#include <hnswlib/hnswlib.h>
#include <xmmintrin.h>

#include "common/crash_point.h"
#include "common/fs.h"
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

namespace {

// Reads nodes of an index file with pread into a per-thread cache that lives for one search
// (HnswIndex::Access::kRead). Why not the map: this kernel's page cache holds a sequentially
// written file in large folios, and a fault on a shared mapping maps the whole folio, about
// 1.4 MB of resident set per node a walk visits (measured with bench/scale.sh: 2 GB of RSS
// for one query on 1M rows). A one-shot command reads the ~1,000 nodes it visits instead
// (2.7 KB each); a server, which answers many queries, maps the file.
class NodeReader {
 public:
  NodeReader(int fd, size_t element_bytes, size_t base, size_t count)
      : fd_(fd), element_bytes_(element_bytes), base_(base), count_(count) {}
  ~NodeReader() { ::close(fd_); }
  const char* Get(uint32_t id) const {
    Cache& c = Local(this);
    auto [it, fresh] = c.at.try_emplace(id, nullptr);
    if (fresh) {
      it->second = c.Alloc(element_bytes_);
      const off_t at = static_cast<off_t>(base_ + static_cast<size_t>(id) * element_bytes_);
      ssize_t got = id < count_ ? ::pread(fd_, it->second, element_bytes_, at) : 0;
      if (got < 0) got = 0;
      // A short read (a file truncated under us) reads as a node with no links, zero vector.
      std::memset(it->second + got, 0, element_bytes_ - static_cast<size_t>(got));
    }
    return it->second;
  }
  // Forgets what this thread read (the start of a search, or a pass over many nodes).
  void Reset() const { Local(this).Clear(); }
  int fd() const { return fd_; }

 private:
  struct Cache {
    const NodeReader* owner = nullptr;
    std::unordered_map<uint32_t, char*> at;
    std::vector<std::unique_ptr<char[]>> chunks;
    size_t used = 0, chunk_bytes = 0;
    char* Alloc(size_t n) {
      if (chunks.empty() || used + n > chunk_bytes) {
        chunk_bytes = std::max<size_t>(n * 256, 1 << 20);
        chunks.push_back(std::make_unique<char[]>(chunk_bytes));
        used = 0;
      }
      char* p = chunks.back().get() + used;
      used += n;
      return p;
    }
    void Clear() {
      at.clear();
      if (chunks.size() > 1) chunks.erase(chunks.begin(), chunks.end() - 1);
      used = 0;
    }
  };
  static Cache& Local(const NodeReader* owner) {
    thread_local Cache cache;
    if (cache.owner != owner) {
      cache.Clear();
      cache.owner = owner;
    }
    return cache;
  }
  int fd_;
  size_t element_bytes_, base_, count_;
};

// Where a graph's nodes are: hnswlib's memory (an index being built or loaded) or a read-only
// map of its file (HnswIndex::Map). The walk reads only through this, so both are searched by
// the same code. hnswlib's base-layer element: [link count (u16) + flags (u8, bit 0 deleted)
// + pad, 2M links (u32)] [vector] [label (size_t)].
struct GraphLayout {
  const char* level0 = nullptr;
  size_t element_bytes = 0, offset_data = 0, label_offset = 0, count = 0;
  size_t max_links0 = 0, max_links = 0, links_bytes = 0;  // links_bytes: one upper level
  int maxlevel = 0;
  tableint entry = 0;
  const char* const* upper = nullptr;  // per node: its upper levels' link lists, or null
  const int* levels = nullptr;         // per node (hnswlib's element_levels_), or null: mapped

  const NodeReader* reader = nullptr;  // set: nodes are read from the file, not mapped
  const char* Element(tableint id) const {
    return reader ? reader->Get(id) : level0 + id * element_bytes;
  }
  const uint16_t* Data(tableint id) const {
    return reinterpret_cast<const uint16_t*>(Element(id) + offset_data);
  }
  bool Deleted(tableint id) const {
    return reinterpret_cast<const unsigned char*>(Element(id))[2] & 1;
  }
  int64_t Label(tableint id) const {
    size_t label;
    std::memcpy(&label, Element(id) + label_offset, sizeof label);
    return static_cast<int64_t>(label);
  }
  // The base layer's links of `id` (count clamped to the maximum: a damaged file cannot make
  // a walk read past the element).
  const tableint* Links0(tableint id, size_t* n) const {
    const char* e = Element(id);
    uint16_t c;
    std::memcpy(&c, e, sizeof c);
    *n = std::min<size_t>(c, max_links0);
    return reinterpret_cast<const tableint*>(e + sizeof(unsigned));
  }
  const tableint* Links(tableint id, int level, size_t* n) const {
    const char* list = upper[id];
    if (list == nullptr) {
      *n = 0;
      return nullptr;
    }
    list += static_cast<size_t>(level - 1) * links_bytes;
    uint16_t c;
    std::memcpy(&c, list, sizeof c);
    *n = std::min<size_t>(c, max_links);
    return reinterpret_cast<const tableint*>(list + sizeof(unsigned));
  }
};

// A pool of visited marks (a tag per node, cleared by changing the tag), as hnswlib's.
class VisitedPool {
 public:
  struct Marks {
    std::vector<uint16_t> tags;
    uint16_t tag = 0;
  };
  std::unique_ptr<Marks> Get(size_t nodes) {
    std::unique_ptr<Marks> m;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        m = std::move(free_.back());
        free_.pop_back();
      }
    }
    if (!m) m = std::make_unique<Marks>();
    if (m->tags.size() < nodes) m->tags.assign(nodes, 0), m->tag = 0;
    if (++m->tag == 0) {
      std::fill(m->tags.begin(), m->tags.end(), 0);
      m->tag = 1;
    }
    return m;
  }
  void Put(std::unique_ptr<Marks> m) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(std::move(m));
  }

 private:
  std::mutex mu_;
  std::vector<std::unique_ptr<Marks>> free_;
};

// A read-only map of an index file (HnswIndex::Map).
struct MappedFile {
  ~MappedFile() {
    if (base != nullptr) ::munmap(const_cast<char*>(base), bytes);
  }
  const char* base = nullptr;
  size_t bytes = 0;
  std::vector<const char*> upper;  // found on the first graph search (a pass over the tail)
  std::once_flag upper_once;
  std::vector<uint8_t> removed;  // Remove() on a mapped index: per node
  size_t removed_count = 0;
  size_t deleted_in_file = 0;          // nodes the file marks deleted
  std::unique_ptr<NodeReader> reader;  // Access::kRead
  std::vector<char> tail;              // kRead: the upper levels' records, read once
};

}  // namespace

struct HnswIndex::Impl {
  explicit Impl(int dims) : space(static_cast<size_t>(dims)), dims(static_cast<size_t>(dims)) {}
  HalfUnitInnerProductSpace space;
  size_t dims;
  std::unique_ptr<Graph> graph;  // owned graph, or null when mapped
  std::unique_ptr<MappedFile> file;
  GraphLayout layout;
  mutable VisitedPool visited;
  int mapped_maxlevel = 0;

  // Refreshes the layout from hnswlib's members (after a load, an insert or a resize).
  void LayoutFromGraph() {
    const Graph& g = *graph;
    layout.level0 = g.data_level0_memory_;
    layout.element_bytes = g.size_data_per_element_;
    layout.offset_data = g.offsetData_;
    layout.label_offset = g.label_offset_;
    layout.count = g.cur_element_count;
    layout.max_links0 = g.maxM0_;
    layout.max_links = g.maxM_;
    layout.links_bytes = g.size_links_per_element_;
    layout.maxlevel = g.maxlevel_;
    layout.entry = g.enterpoint_node_;
    layout.upper = g.linkLists_;
    layout.levels = g.element_levels_.data();
  }
  void EnsureUpperLinks() const;
  // In Access::kRead, a pass over many nodes forgets what it read every 4,096 nodes (the
  // per-search cache would otherwise hold the whole file).
  void ResetReads(size_t i) const {
    if (layout.reader && (i & 4095) == 4095) layout.reader->Reset();
  }
  void BeginSearch() const {
    if (layout.reader) layout.reader->Reset();
  }

  bool Removed(tableint id) const {
    return layout.Deleted(id) || (file && !file->removed.empty() && file->removed[id]);
  }
  float Distance(const float* q, tableint id) const {
    return 1.0f - InnerProductHalf(q, layout.Data(id), dims);
  }
  // The query's filter and exclusions (IndexSearchParams), as one test per node.
  struct Filter {
    const IdSelector* allow = nullptr;
    const std::unordered_set<int64_t>* exclude = nullptr;
  };
  bool Passes(tableint id, const Filter* f) const {
    if (Removed(id)) return false;
    if (f == nullptr) return true;
    const int64_t label = layout.Label(id);
    return (f->allow == nullptr || f->allow->Allows(label)) &&
           (f->exclude == nullptr || f->exclude->count(label) == 0);
  }

  // Greedy descent through the upper layers to the base layer's entry point.
  tableint Descend(const float* q, size_t* distances) const {
    tableint cur = layout.entry;
    float cur_dist = Distance(q, cur);
    ++*distances;
    for (int level = layout.maxlevel; level > 0; --level) {
      for (bool changed = true; changed;) {
        changed = false;
        size_t size = 0;
        const tableint* links = layout.Links(cur, level, &size);
        for (size_t i = 0; i < size; ++i) {
          if (links[i] >= layout.count) continue;  // damaged link
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
  MaxHeap WalkBaseLayer(const float* q, tableint entry, size_t ef, const Filter* filter,
                        size_t* distances) const {
    auto marks = visited.Get(layout.count);
    uint16_t* seen = marks->tags.data();
    const uint16_t tag = marks->tag;
    MinHeap candidates;
    MaxHeap kept;
    const float d0 = Distance(q, entry);
    ++*distances;
    seen[entry] = tag;
    candidates.emplace(d0, entry);
    if (Passes(entry, filter)) kept.emplace(d0, entry);
    tableint fresh[2048];
    float dist[2048];
    while (!candidates.empty()) {
      const Candidate c = candidates.top();
      if (kept.size() >= ef && c.first > kept.top().first) break;
      candidates.pop();
      size_t size = 0;
      const tableint* links = layout.Links0(c.second, &size);
      size = std::min<size_t>(size, 2048);
      size_t n = 0;
      for (size_t i = 0; i < size; ++i) {
        const tableint id = links[i];
        if (id >= layout.count || seen[id] == tag) continue;
        seen[id] = tag;
        fresh[n++] = id;
        _mm_prefetch(reinterpret_cast<const char*>(layout.Data(id)), _MM_HINT_T0);
      }
      *distances += n;
      // Four rows at a time: their memory reads overlap (see InnerProductHalf4).
      size_t i = 0;
      for (; i + 4 <= n; i += 4) {
        const uint16_t* rows[4];
        for (int j = 0; j < 4; ++j) rows[j] = layout.Data(fresh[i + j]);
        InnerProductHalf4(q, rows, dims, dist + i);
        for (int j = 0; j < 4; ++j) dist[i + j] = 1.0f - dist[i + j];
      }
      for (; i < n; ++i) dist[i] = Distance(q, fresh[i]);
      for (size_t j = 0; j < n; ++j) {
        const float d = dist[j];
        if (kept.size() < ef || d < kept.top().first) {
          candidates.emplace(d, fresh[j]);
          if (Passes(fresh[j], filter)) {
            kept.emplace(d, fresh[j]);
            if (kept.size() > ef) kept.pop();
          }
        }
      }
    }
    visited.Put(std::move(marks));
    return kept;
  }

  MaxHeap Scan(const float* q, size_t k, const Filter* filter, size_t* distances) const {
    MaxHeap kept;
    std::vector<tableint> rows;
    for (tableint id = 0; id < layout.count; ++id) {
      if (Passes(id, filter)) rows.push_back(id);
      ResetReads(id);
    }
    // The rows are scattered through the graph's memory: read four side by side.
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
      if (layout.reader && (i & 4095) == 0) layout.reader->Reset();
      const uint16_t* data[4] = {layout.Data(rows[i]), layout.Data(rows[i + 1]),
                                 layout.Data(rows[i + 2]), layout.Data(rows[i + 3])};
      float dot[4];
      InnerProductHalf4(q, data, dims, dot);
      for (int j = 0; j < 4; ++j) keep(1.0f - dot[j], rows[i + j]);
    }
    for (; i < rows.size(); ++i) keep(Distance(q, rows[i]), rows[i]);
    *distances += rows.size();
    return kept;
  }
};

namespace {
constexpr size_t kHnswHeaderBytes = 96;  // hnswlib 0.6.2's 13 header fields
}  // namespace

// The upper levels' link lists follow the base layer in the file, one variable-size record
// per node: finding them is one pass over that tail (about 8 bytes per node), done once, at the
// first search that descends, not at open.
void HnswIndex::Impl::EnsureUpperLinks() const {
  if (!file) return;
  MappedFile& f = *file;
  std::call_once(f.upper_once, [&] {
    GraphLayout& l = const_cast<GraphLayout&>(layout);
    f.upper.assign(layout.count, nullptr);
    const size_t start = kHnswHeaderBytes + layout.count * layout.element_bytes;
    const char* base = f.base;
    if (f.reader) {
      f.tail.assign(f.bytes - std::min(f.bytes, start), 0);
      const ssize_t got =
          ::pread(f.reader->fd(), f.tail.data(), f.tail.size(), static_cast<off_t>(start));
      f.tail.resize(got > 0 ? static_cast<size_t>(got) : 0);
      base = f.tail.data() - start;  // so that base + offset addresses the tail
    }
    size_t at = start;
    for (size_t i = 0; i < layout.count && at + sizeof(unsigned) <= f.bytes; ++i) {
      unsigned size;
      std::memcpy(&size, base + at, sizeof size);
      at += sizeof size;
      if (size == 0) continue;
      if (size > f.bytes - at) break;  // damaged: the rest have no upper levels
      f.upper[i] = base + at;
      at += size;
    }
    l.upper = f.upper.data();
    l.maxlevel = mapped_maxlevel;
  });
}

HnswIndex::HnswIndex(int dims, const IndexBuildParams& params)
    : dims_(dims), params_(params), impl_(std::make_unique<Impl>(dims)) {}
HnswIndex::~HnswIndex() = default;

std::unique_ptr<HnswIndex> HnswIndex::Create(int dims, const IndexBuildParams& params) {
  std::unique_ptr<HnswIndex> index(new HnswIndex(dims, params));
  index->impl_->graph =
      std::make_unique<Graph>(&index->impl_->space, 1024, params.m, params.ef_construction);
  MoveBaseLayerToHugePages(*index->impl_->graph);
  index->impl_->LayoutFromGraph();
  return index;
}

bool HnswIndex::mapped() const { return impl_->file != nullptr; }

IdSelector::IdSelector(std::vector<int64_t> ids) : ids_(std::move(ids)) {
  std::sort(ids_.begin(), ids_.end());
  ids_.erase(std::unique(ids_.begin(), ids_.end()), ids_.end());
  if (ids_.empty()) return;
  lo_ = ids_.front();
  hi_ = ids_.back();
  // A bitmap when it costs at most 8 bytes per allowed id: one test per visited node.
  const uint64_t span = static_cast<uint64_t>(hi_ - lo_) + 1;
  if (span / 64 <= ids_.size()) {
    bits_.assign(span / 64 + 1, 0);
    for (int64_t id : ids_) {
      const uint64_t at = static_cast<uint64_t>(id - lo_);
      bits_[at >> 6] |= uint64_t{1} << (at & 63);
    }
  }
}

Status HnswIndex::Add(const int64_t* ids, const float* vectors, size_t n, int threads) {
  if (!impl_->graph) return Status::Unsupported("a mapped index is read-only: load it to add rows");
  Status st = AddToGraph(ids, vectors, n, threads);
  impl_->LayoutFromGraph();
  return st;
}

Status HnswIndex::AddToGraph(const int64_t* ids, const float* vectors, size_t n, int threads) {
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
  if (impl_->file) {
    // No label lookup in a mapped file: one pass over the labels.
    MappedFile& f = *impl_->file;
    if (f.removed.empty()) f.removed.assign(impl_->layout.count, 0);
    const IdSelector gone(ids);
    for (tableint i = 0; i < impl_->layout.count; ++i) {
      impl_->ResetReads(i);
      if (!impl_->Removed(i) && gone.Allows(impl_->layout.Label(i))) {
        f.removed[i] = 1;
        ++f.removed_count;
        ++removed;
      }
    }
    return removed;
  }
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

std::vector<IdNeighbor> HnswIndex::Search(const float* query, const IndexSearchParams& params,
                                          IndexSearchStats* stats) const {
  IndexSearchStats local;
  IndexSearchStats& st = stats ? *stats : local;
  st = IndexSearchStats();
  impl_->BeginSearch();
  const size_t live = size();
  const size_t allowed =
      std::min(live, params.filter ? params.filter->count() : live) -
      std::min(live, params.exclude && !params.filter ? params.exclude->size() : size_t{0});
  const Impl::Filter filter{params.filter, params.exclude};
  const Impl::Filter* f = params.filter || params.exclude ? &filter : nullptr;
  if (params.k <= 0 || allowed == 0) return {};
  const size_t k = static_cast<size_t>(params.k);
  size_t ef = std::max<size_t>(k, params.ef > 0 ? params.ef : IndexSearchParams::kDefaultEf);
  st.ef_used = static_cast<int>(ef);

  MaxHeap kept;
  const bool scan =
      params.exact || (params.filter != nullptr && FilterScanIsCheaper(allowed, live, ef));
  if (scan) {
    st.plan =
        params.filter ? IndexSearchStats::Plan::kExactFiltered : IndexSearchStats::Plan::kExact;
    kept = impl_->Scan(query, k, f, &st.distances);
  } else {
    impl_->EnsureUpperLinks();
    const tableint entry = impl_->Descend(query, &st.distances);
    for (;;) {
      kept = impl_->WalkBaseLayer(query, entry, ef, f, &st.distances);
      if (kept.size() >= std::min(k, allowed)) break;
      // Too few rows passed (a filter whose rows the walk cannot reach): widen, and in the
      // end scan, so that k rows come back whenever k rows are allowed.
      if (ef >= live) {
        st.plan = IndexSearchStats::Plan::kExactFiltered;
        kept = impl_->Scan(query, k, f, &st.distances);
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
    out[i] = {impl_->layout.Label(kept.top().second), kept.top().first};
    kept.pop();
  }
  return out;
}

std::vector<int64_t> HnswIndex::Ids() const {
  std::vector<int64_t> ids;
  ids.reserve(size());
  for (tableint i = 0; i < impl_->layout.count; ++i) {
    if (!impl_->Removed(i)) ids.push_back(impl_->layout.Label(i));
    impl_->ResetReads(i);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

size_t HnswIndex::size() const {
  if (impl_->file) {
    return impl_->layout.count - impl_->file->deleted_in_file - impl_->file->removed_count;
  }
  return impl_->graph->cur_element_count - impl_->graph->num_deleted_;
}

bool FilterScanIsCheaper(size_t allowed, size_t live, size_t ef) {
  // A walk visits about 16 nodes per unit of ef on the base layer (bench/search, M=16), so
  // under a filter about 16·ef/selectivity nodes; a scan of the allowed rows visits `allowed`.
  constexpr double kWalkDistancesPerEf = 16.0;
  const double selectivity =
      static_cast<double>(allowed) / static_cast<double>(std::max<size_t>(live, 1));
  return static_cast<double>(allowed) * selectivity <=
         kWalkDistancesPerEf * static_cast<double>(ef);
}

size_t HnswIndex::nodes() const { return impl_->layout.count; }

size_t HnswIndex::MemoryBytes() const {
  if (!impl_->graph) {
    return impl_->file->upper.size() * sizeof(void*) + impl_->file->removed.size();
  }
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

}  // namespace

Result<std::string> HnswIndex::Save(const std::string& path) const {
  namespace fs = std::filesystem;
  if (!impl_->graph) return Status::Unsupported("a mapped index cannot be saved: load it");
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
  index->impl_->LayoutFromGraph();
  index->params_.m = static_cast<int>(g.M_);
  index->params_.ef_construction = static_cast<int>(g.ef_construction_);
  return index;
}

namespace {
template <typename T>
T HeaderField(const char* base, size_t* at) {
  T v;
  std::memcpy(&v, base + *at, sizeof v);
  *at += sizeof v;
  return v;
}
}  // namespace

Result<std::unique_ptr<HnswIndex>> HnswIndex::Map(const std::string& path, int dims,
                                                  size_t live_rows, Access access) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::Corruption("index file " + path + " is missing");
  struct stat sb;
  if (::fstat(fd, &sb) != 0 || static_cast<size_t>(sb.st_size) < kHnswHeaderBytes) {
    ::close(fd);
    return Status::Corruption("index file " + path + " is truncated");
  }
  auto file = std::make_unique<MappedFile>();
  file->bytes = static_cast<size_t>(sb.st_size);
  char header[kHnswHeaderBytes];
  if (::pread(fd, header, sizeof header, 0) != static_cast<ssize_t>(sizeof header)) {
    ::close(fd);
    return Status::Corruption("index file " + path + " cannot be read");
  }
  if (access == Access::kMapped) {
    void* map = ::mmap(nullptr, file->bytes, PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    if (map == MAP_FAILED) return Status::IOError("cannot map index file " + path);
    ::madvise(map, file->bytes, MADV_RANDOM);
    file->base = static_cast<const char*>(map);
  }
  size_t at = 0;
  const char* b = header;
  const size_t offset_level0 = HeaderField<size_t>(b, &at);
  HeaderField<size_t>(b, &at);  // max_elements
  const size_t count = HeaderField<size_t>(b, &at);
  const size_t element_bytes = HeaderField<size_t>(b, &at);
  const size_t label_offset = HeaderField<size_t>(b, &at);
  const size_t offset_data = HeaderField<size_t>(b, &at);
  const int maxlevel = HeaderField<int>(b, &at);
  const tableint entry = HeaderField<tableint>(b, &at);
  const size_t max_m = HeaderField<size_t>(b, &at);
  const size_t max_m0 = HeaderField<size_t>(b, &at);
  const size_t m = HeaderField<size_t>(b, &at);
  HeaderField<double>(b, &at);  // mult
  const size_t ef_construction = HeaderField<size_t>(b, &at);
  const size_t links0 = sizeof(unsigned) + max_m0 * sizeof(tableint);
  const size_t data = static_cast<size_t>(dims) * sizeof(uint16_t);
  if (element_bytes == links0 + static_cast<size_t>(dims) * sizeof(float) + sizeof(size_t)) {
    return Status::Mismatch("index file " + path +
                            " holds float32 vectors (an earlier nearlabel wrote it); it is "
                            "rebuilt by `nearlabel index build`");
  }
  if (offset_level0 != 0 || max_m0 > 4096 || max_m > max_m0 || offset_data != links0 ||
      element_bytes != links0 + data + sizeof(size_t) || label_offset != links0 + data ||
      count > (file->bytes - kHnswHeaderBytes) / element_bytes || maxlevel < 0 || maxlevel > 64 ||
      (count > 0 && entry >= count)) {
    return Status::Corruption("index file " + path + " is damaged or does not hold " +
                              std::to_string(dims) + "-d vectors (its header does not add up)");
  }
  std::unique_ptr<HnswIndex> index(new HnswIndex(dims, {}));
  index->params_.m = static_cast<int>(m);
  index->params_.ef_construction = static_cast<int>(ef_construction);
  GraphLayout& l = index->impl_->layout;
  if (access == Access::kRead) {
    file->reader = std::make_unique<NodeReader>(fd, element_bytes, kHnswHeaderBytes, count);
    l.reader = file->reader.get();
  } else {
    l.level0 = file->base + kHnswHeaderBytes;
  }
  l.element_bytes = element_bytes;
  l.offset_data = offset_data;
  l.label_offset = label_offset;
  l.count = count;
  l.max_links0 = max_m0;
  l.max_links = max_m;
  l.links_bytes = sizeof(unsigned) + max_m * sizeof(tableint);
  l.maxlevel = maxlevel;
  l.entry = entry;
  index->impl_->file = std::move(file);
  if (live_rows <= count) {
    index->impl_->file->deleted_in_file = count - live_rows;
  } else {
    for (tableint i = 0; i < count; ++i) {
      index->impl_->file->deleted_in_file += l.Deleted(i);
      index->impl_->ResetReads(i);
    }
  }
  // Until the upper levels are found, a descent starts at the entry on the base layer.
  index->impl_->layout.maxlevel = 0;
  index->impl_->mapped_maxlevel = maxlevel;
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
