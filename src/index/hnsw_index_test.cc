#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "nearlabel/index.h"
#include "nearlabel/search.h"
#include "test_util.h"

namespace nearlabel {
namespace {

// n unit vectors around `clusters` random centres (real embeddings are clustered; uniform
// random high-dimensional data has no neighbourhood structure for a graph to use).
VectorTable Clustered(size_t n, int d, int clusters, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g;
  std::vector<float> centres(static_cast<size_t>(clusters) * d);
  for (auto& c : centres) c = g(rng);
  VectorTable t;
  t.dims = d;
  t.vectors.resize(n * d);
  for (size_t i = 0; i < n; ++i) {
    t.ids.push_back(static_cast<int64_t>(i) * 3 + 5);  // ids are not positions
    const float* c = centres.data() + (rng() % clusters) * d;
    float* v = t.vectors.data() + i * d;
    double s = 0;
    for (int j = 0; j < d; ++j) {
      v[j] = c[j] + 0.6f * g(rng);
      s += v[j] * v[j];
    }
    for (int j = 0; j < d; ++j) v[j] /= static_cast<float>(std::sqrt(s));
  }
  return t;
}

std::unique_ptr<HnswIndex> Build(const VectorTable& t) {
  IndexBuildParams p;
  p.m = 12;
  p.ef_construction = 100;
  p.threads = 2;
  auto index = HnswIndex::Create(t.dims, p);
  EXPECT_TRUE(index->Add(t.ids.data(), t.vectors.data(), t.size(), 2).ok());
  return index;
}

// Fraction of the exact top-k (over allowed rows) the index found.
double Recall(const HnswIndex& index, const VectorTable& t, const std::vector<uint8_t>& allowed,
              const IndexFilter* filter, int k, int ef, size_t queries) {
  size_t found = 0, total = 0;
  for (size_t q = 0; q < queries; ++q) {
    const float* query = t.row(q * 7 % t.size());
    SearchParams sp;
    sp.k = k;
    sp.allowed = allowed;
    auto exact = ExactSearch(t, query, sp);
    IndexSearchParams ip;
    ip.k = k;
    ip.ef = ef;
    ip.filter = filter;
    auto got = index.Search(query, ip);
    EXPECT_EQ(got.size(), exact.size()) << "query " << q;
    std::set<int64_t> want;
    for (auto& n : exact) want.insert(t.ids[n.row]);
    for (auto& n : got) {
      found += want.count(n.id);
      if (!allowed.empty()) {
        auto pos = std::lower_bound(t.ids.begin(), t.ids.end(), n.id) - t.ids.begin();
        EXPECT_TRUE(allowed[pos]) << "row " << n.id << " is not allowed";
      }
    }
    total += exact.size();
  }
  return total ? static_cast<double>(found) / static_cast<double>(total) : 1.0;
}

TEST(HnswIndexTest, RecallAgainstExactSearch) {
  VectorTable t = Clustered(3000, 32, 30, 1);
  auto index = Build(t);
  EXPECT_EQ(index->size(), t.size());
  EXPECT_EQ(index->Ids(), t.ids);
  EXPECT_GE(Recall(*index, t, {}, nullptr, 10, 64, 100), 0.95);
  // Exact mode equals ExactSearch.
  IndexSearchParams ip;
  ip.k = 10;
  ip.exact = true;
  IndexSearchStats st;
  auto got = index->Search(t.row(0), ip, &st);
  EXPECT_EQ(st.plan, IndexSearchStats::Plan::kExact);
  SearchParams sp;
  sp.k = 10;
  auto want = ExactSearch(t, t.row(0), sp);
  for (size_t i = 0; i < 10; ++i) EXPECT_EQ(got[i].id, t.ids[want[i].row]);
}

TEST(HnswIndexTest, FilteredSearchReturnsKAtEverySelectivity) {
  VectorTable t = Clustered(4000, 32, 40, 2);
  auto index = Build(t);
  std::mt19937 rng(9);
  for (double selectivity : {0.5, 0.05, 0.005, 0.001}) {
    std::vector<uint8_t> allowed(t.size(), 0);
    std::vector<int64_t> ids;
    for (size_t i = 0; i < t.size(); ++i) {
      if (std::uniform_real_distribution<double>()(rng) < selectivity) {
        allowed[i] = 1;
        ids.push_back(t.ids[i]);
      }
    }
    IndexFilter f = index->MakeFilter(ids);
    EXPECT_EQ(f.count(), ids.size());
    EXPECT_GE(Recall(*index, t, allowed, &f, 10, 64, 40), 0.95) << "selectivity " << selectivity;
  }
}

TEST(HnswIndexTest, WidensWhenTheWalkFindsTooFewAllowedRows) {
  VectorTable t = Clustered(3000, 32, 30, 5);
  auto index = Build(t);
  // Allow the 300 rows farthest from the query: the walk starts far from all of them, and the
  // filter is not selective enough for the scan plan at ef=10.
  const float* q = t.row(0);
  SearchParams sp;
  sp.k = static_cast<int>(t.size());
  auto all = ExactSearch(t, q, sp);
  std::vector<int64_t> ids;
  for (size_t i = all.size() - 300; i < all.size(); ++i) ids.push_back(t.ids[all[i].row]);
  IndexFilter f = index->MakeFilter(ids);
  IndexSearchParams ip;
  ip.k = 10;
  ip.ef = 10;
  ip.filter = &f;
  IndexSearchStats st;
  auto got = index->Search(q, ip, &st);
  ASSERT_EQ(got.size(), 10u) << PlanName(st.plan);
  std::set<int64_t> allowed(ids.begin(), ids.end());
  for (auto& n : got) EXPECT_TRUE(allowed.count(n.id));
}

TEST(HnswIndexTest, RemovedRowsAreNeverReturned) {
  VectorTable t = Clustered(1000, 16, 10, 3);
  auto index = Build(t);
  std::vector<int64_t> gone(t.ids.begin(), t.ids.begin() + 500);
  EXPECT_EQ(index->Remove(gone), 500u);
  EXPECT_EQ(index->Remove(gone), 0u);  // already removed
  EXPECT_EQ(index->size(), 500u);
  for (size_t q = 0; q < 50; ++q) {
    IndexSearchParams ip;
    ip.k = 20;
    auto got = index->Search(t.row(q), ip);
    EXPECT_EQ(got.size(), 20u);
    for (auto& n : got) EXPECT_GE(n.id, t.ids[500]);
  }
}

TEST(HnswIndexTest, AMappedOrReadFileAnswersAsTheLoadedGraph) {
  testing::TempDir d;
  VectorTable t = Clustered(1500, 16, 12, 6);
  auto index = Build(t);
  index->Remove({t.ids[7], t.ids[8]});
  const std::string path = d.Join("i.hnsw");
  auto sha = index->Save(path);
  ASSERT_TRUE(sha.ok());
  for (auto access : {HnswIndex::Access::kMapped, HnswIndex::Access::kRead}) {
    auto m = HnswIndex::Map(path, 16, SIZE_MAX, access);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_TRUE((*m)->mapped());
    EXPECT_EQ((*m)->size(), index->size());
    EXPECT_EQ((*m)->Ids(), index->Ids());
    EXPECT_EQ((*m)->Add(t.ids.data(), t.vectors.data(), 1).code(), Status::Code::kUnsupported);
    IndexFilter f = IdSelector(std::vector<int64_t>(t.ids.begin(), t.ids.begin() + 600));
    for (size_t q = 0; q < 30; ++q) {
      IndexSearchParams ip;
      ip.k = 10;
      ip.filter = q % 2 ? &f : nullptr;
      auto a = index->Search(t.row(q), ip), b = (*m)->Search(t.row(q), ip);
      ASSERT_EQ(a.size(), b.size());
      for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].id, b[i].id);
    }
    EXPECT_EQ((*m)->Remove({t.ids[100]}), 1u);
    EXPECT_EQ((*m)->size(), index->size() - 1);
  }
  // A header that does not add up is refused; a truncated body searches without crashing.
  EXPECT_EQ(HnswIndex::Map(path, 32).status().code(), Status::Code::kCorruption);
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  auto cut = HnswIndex::Map(path, 16, SIZE_MAX, HnswIndex::Access::kRead);
  if (cut.ok()) {
    IndexSearchParams ip;
    (*cut)->Search(t.row(0), ip);
  }
}

TEST(HnswIndexTest, SaveLoadRoundTripAndDamagedFiles) {
  testing::TempDir d;
  VectorTable t = Clustered(800, 16, 8, 4);
  auto index = Build(t);
  index->Remove({t.ids[3]});
  const std::string path = d.Join("i.hnsw");
  auto sha = index->Save(path);
  ASSERT_TRUE(sha.ok()) << sha.status().ToString();
  auto loaded = HnswIndex::Load(path, 16, {}, *sha);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ((*loaded)->Ids(), index->Ids());
  EXPECT_EQ((*loaded)->params().m, 12);
  IndexSearchParams ip;
  for (size_t q = 0; q < 20; ++q) {
    auto a = index->Search(t.row(q), ip), b = (*loaded)->Search(t.row(q), ip);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].id, b[i].id);
  }
  EXPECT_EQ(HnswIndex::Load(path, 32, {}, *sha).status().code(), Status::Code::kMismatch);
  // One flipped byte: the checksum catches it.
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(5000);
    f.put('\x7f');
  }
  auto bad = HnswIndex::Load(path, 16, {}, *sha);
  EXPECT_EQ(bad.status().code(), Status::Code::kCorruption);
  EXPECT_NE(bad.status().message().find("checksum"), std::string::npos);
  // Truncated, without a checksum to compare: hnswlib's own structure check catches it.
  std::filesystem::resize_file(path, 3000);
  EXPECT_EQ(HnswIndex::Load(path, 16, {}, "").status().code(), Status::Code::kCorruption);
  EXPECT_EQ(HnswIndex::Load(d.Join("none"), 16, {}, "").status().code(), Status::Code::kCorruption);
}

TEST(StoreIndexTest, CatchesUpWithInsertsAndDeletesSinceTheSave) {
  testing::TempDir d;
  auto s = OpenSqliteStore(d.Join("s.db"), Store::Mode::kCreate);
  ASSERT_TRUE(s.ok());
  Store& store = **s;
  CollectionInfo info;
  info.model = "m";
  info.model_sha256 = std::string(64, 'a');
  info.dims = 16;
  ASSERT_TRUE(store.EnsureCollection(info).ok());
  VectorTable t = Clustered(600, 16, 6, 8);
  auto insert = [&](size_t from, size_t to) {
    std::vector<NewItem> items;
    for (size_t i = from; i < to; ++i) {
      items.push_back({"/x/" + std::to_string(i), "sha" + std::to_string(i),
                       "{\"n\":" + std::to_string(i) + "}",
                       std::vector<float>(t.row(i), t.row(i) + 16), ""});
    }
    ASSERT_TRUE(store.InsertBatch(items).ok());
  };
  insert(0, 400);
  EXPECT_EQ(OpenStoreIndex(store, 10).status().code(), Status::Code::kNotFound);
  IndexBuildParams p;
  p.m = 8;
  p.ef_construction = 50;
  auto built = UpdateStoreIndex(store, true, p);
  ASSERT_TRUE(built.ok()) << built.status().ToString();
  auto state = ReadIndexState(store);
  ASSERT_TRUE(state.ok() && state->exists);
  EXPECT_EQ(state->rows, 400u);
  EXPECT_EQ(state->params.m, 8);
  const std::string first_file = state->file;

  insert(400, 600);
  ASSERT_TRUE(store.Delete("json_extract(metadata, '$.n') < 100").ok());
  EXPECT_EQ(OpenStoreIndex(store, 10).status().code(), Status::Code::kInvalidArgument);
  IndexCatchUp cu;
  auto index = OpenStoreIndex(store, 1000, &cu);
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  EXPECT_EQ(cu.added, 200u);
  EXPECT_EQ(cu.removed, 100u);
  EXPECT_EQ((*index)->Ids(), *store.SelectIds(""));

  auto updated = UpdateStoreIndex(store, false, p);
  ASSERT_TRUE(updated.ok());
  EXPECT_EQ(updated->action, IndexUpdate::Action::kCaughtUp);
  EXPECT_EQ(updated->added, 200u);
  EXPECT_EQ(updated->removed, 100u);
  EXPECT_NE(IndexUpdateSummary(*updated).find("added 200, removed 100"), std::string::npos);
  state = ReadIndexState(store);
  EXPECT_EQ(state->rows, 500u);
  EXPECT_NE(state->file, first_file);
  EXPECT_FALSE(std::filesystem::exists(first_file));  // the old generation is gone
  EXPECT_EQ(UpdateStoreIndex(store, false, p)->action, IndexUpdate::Action::kUpToDate);

  // A damaged current file: open reports it, an update rebuilds.
  std::filesystem::resize_file(state->file, 100);
  EXPECT_EQ(OpenStoreIndex(store, 10).status().code(), Status::Code::kCorruption);
  auto rebuilt = UpdateStoreIndex(store, false, p);
  ASSERT_TRUE(rebuilt.ok());
  EXPECT_EQ(rebuilt->action, IndexUpdate::Action::kBuilt);
  EXPECT_EQ(rebuilt->rows, 500u);
  EXPECT_FALSE(rebuilt->why_rebuilt.empty());
  EXPECT_TRUE(OpenStoreIndex(store, 0).ok());
}

}  // namespace
}  // namespace nearlabel
