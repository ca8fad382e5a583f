#include "nearlabel/collection.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "nearlabel/index.h"
#include "nearlabel/search.h"
#include "nearlabel/segment.h"
#include "test_util.h"

namespace nearlabel {
namespace {

constexpr int kDims = 32;

// Unit vectors around a few centres, labelled by centre.
std::vector<NewItem> Rows(size_t n, unsigned seed, size_t first = 0) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g;
  std::vector<float> centres(10 * kDims);
  std::mt19937 crng(1);
  for (auto& c : centres) c = g(crng);
  std::vector<NewItem> out;
  for (size_t i = 0; i < n; ++i) {
    const size_t c = rng() % 10;
    NewItem it;
    it.source = "img" + std::to_string(first + i) + ".jpg";
    it.sha256 = std::to_string(seed) + "-" + std::to_string(first + i);
    it.metadata_json =
        "{\"label\":\"c" + std::to_string(c) + "\",\"part\":\"p" + std::to_string(i % 4) + "\"}";
    double s = 0;
    for (int j = 0; j < kDims; ++j) {
      it.embedding.push_back(centres[c * kDims + j] + 0.6f * g(rng));
      s += it.embedding.back() * it.embedding.back();
    }
    for (float& x : it.embedding) x /= static_cast<float>(std::sqrt(s));
    out.push_back(std::move(it));
  }
  return out;
}

std::unique_ptr<Store> MakeStore(const std::string& path, size_t n) {
  auto s = OpenSqliteStore(path, Store::Mode::kCreate);
  EXPECT_TRUE(s.ok());
  CollectionInfo info;
  info.model = "test";
  info.model_sha256 = "x";
  info.dims = kDims;
  EXPECT_TRUE((*s)->EnsureCollection(info).ok());
  EXPECT_TRUE((*s)->InsertBatch(Rows(n, 3)).ok());
  return std::move(*s);
}

// The exact answer over the store's rows as they are now.
std::vector<int64_t> ExactIds(Store& store, const float* q, int k, const std::string& where = "") {
  auto t = store.LoadVectors(where);
  SearchParams p;
  p.k = k;
  std::vector<int64_t> ids;
  for (const Neighbor& nb : ExactSearch(*t, q, p)) ids.push_back(t->ids[nb.row]);
  return ids;
}

std::vector<int64_t> Ids(const Answer& a) {
  std::vector<int64_t> ids;
  for (const AnswerRow& r : a.neighbors) ids.push_back(r.id);
  return ids;
}

TEST(CollectionTest, OpensFromTheSegmentAndAnswersAsAnExactScanOfTheTable) {
  testing::TempDir d;
  const std::string path = d.Join("s.db");
  auto store = MakeStore(path, 500);
  auto c = Collection::Open(path);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ((*c)->state().segment, SegmentPath(path));
  EXPECT_NE((*c)->state().log.find("vector segment built"), std::string::npos);
  auto q = Rows(1, 99)[0].embedding;
  QueryOptions o;
  o.k = 10;
  auto a = (*c)->Search(q.data(), o);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(Ids(*a), ExactIds(*store, q.data(), 10));
  EXPECT_NE(a->neighbors[0].metadata.find("label"), std::string::npos);
  // A second open maps the same file and builds nothing.
  auto again = Collection::Open(path);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->state().notices, "");
  EXPECT_EQ(Ids(*(*again)->Search(q.data(), o)), Ids(*a));
}

TEST(CollectionTest, EveryReaderSeesEveryWriter) {
  testing::TempDir d;
  const std::string path = d.Join("s.db");
  auto store = MakeStore(path, 300);
  auto c = Collection::Open(path);
  ASSERT_TRUE(c.ok());
  // Another connection (another process, as far as SQLite is concerned) writes.
  auto added = Rows(50, 7, 1000);
  ASSERT_TRUE(store->InsertBatch(added).ok());
  ASSERT_TRUE(store->Delete("id <= 40").ok());
  ASSERT_TRUE(store
                  ->Execute("UPDATE items SET embedding = (SELECT embedding FROM items WHERE "
                            "id = 100) WHERE id = 200")
                  .ok());
  auto applied = (*c)->Refresh();
  ASSERT_TRUE(applied.ok()) << applied.status().ToString();
  EXPECT_EQ(*applied, 50u + 40u + 2u);
  EXPECT_EQ((*c)->size(), 300u + 50u - 40u);
  QueryOptions o;
  o.k = 20;
  for (const NewItem& q : {added[3], added[17], Rows(1, 5)[0]}) {
    auto a = (*c)->Search(q.embedding.data(), o);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(Ids(*a), ExactIds(*store, q.embedding.data(), 20));
    for (int64_t id : Ids(*a)) EXPECT_GT(id, 40);
  }
  // Row 200 now has row 100's vector: both at distance 0 from it.
  auto v100 = store->GetItem(100);
  auto a = (*c)->Search(v100->embedding.data(), o);
  EXPECT_LT(a->neighbors[1].distance, 1e-6);
  // A fresh open catches up from the old segment the same way.
  auto fresh = Collection::Open(path);
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ((*fresh)->state().overlay_added, 51u);
  EXPECT_EQ(Ids(*(*fresh)->Search(added[3].embedding.data(), o)),
            Ids(*(*c)->Search(added[3].embedding.data(), o)));
}

// Vectors() of the table as it is, in id order, in the file or in memory; a segment handed
// out stays as it was after later changes.
void ExpectVectorsOfTable(Store& store, const VectorSegment& seg) {
  auto t = store.LoadVectors("");
  ASSERT_TRUE(t.ok());
  ASSERT_EQ(seg.rows(), t->size());
  EXPECT_TRUE(std::equal(t->ids.begin(), t->ids.end(), seg.ids()));
  EXPECT_TRUE(std::equal(t->vectors.begin(), t->vectors.end(), seg.vectors()));
}

TEST(CollectionTest, VectorsFoldInEveryCommittedChangeAndAViewOutlivesLaterOnes) {
  testing::TempDir d;
  for (bool in_memory : {false, true}) {
    const std::string path = d.Join(in_memory ? "m.db" : "f.db");
    auto store = MakeStore(path, 200);
    CollectionOptions opt;
    opt.write_segment = !in_memory;
    auto c = Collection::Open(path, opt);
    ASSERT_TRUE(c.ok());
    auto first = (*c)->Vectors();
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    ExpectVectorsOfTable(*store, **first);
    EXPECT_EQ((*first)->path().empty(), in_memory);
    const std::vector<int64_t> first_ids((*first)->ids(), (*first)->ids() + (*first)->rows());
    // Changes below the compaction bound: Vectors() folds them in anyway.
    ASSERT_TRUE(store->InsertBatch(Rows(7, 9, 3000)).ok());
    ASSERT_TRUE(store->Delete("id IN (5, 6, 150)").ok());
    auto second = (*c)->Vectors();
    ASSERT_TRUE(second.ok()) << second.status().ToString();
    ExpectVectorsOfTable(*store, **second);
    EXPECT_EQ((*second)->rows(), 200u + 7u - 3u);
    // The first view is still the table as it was.
    ASSERT_EQ((*first)->rows(), 200u);
    EXPECT_TRUE(std::equal(first_ids.begin(), first_ids.end(), (*first)->ids()));
  }
}

TEST(CollectionTest, CompactsTheSegmentPastItsOverlayBound) {
  testing::TempDir d;
  const std::string path = d.Join("s.db");
  auto store = MakeStore(path, 200);
  ASSERT_TRUE(Collection::Open(path).ok());
  ASSERT_TRUE(store->InsertBatch(Rows(300, 8, 5000)).ok());
  ASSERT_TRUE(store->Delete("id % 3 = 0").ok());
  CollectionOptions opt;
  opt.max_overlay = 10;
  auto c = Collection::Open(path, opt);
  ASSERT_TRUE(c.ok());
  const CollectionState s = (*c)->state();
  EXPECT_NE(s.log.find("rewritten"), std::string::npos) << s.log;
  EXPECT_EQ(s.overlay_added + s.overlay_removed, 0u);
  EXPECT_EQ(s.segment_rows, static_cast<size_t>(*store->Count()));
  auto seg = VectorSegment::Map(SegmentPath(path), kDims);
  ASSERT_TRUE(seg.ok());
  EXPECT_TRUE((*seg)->Verify().ok());
  auto q = Rows(1, 77)[0].embedding;
  QueryOptions o;
  o.k = 15;
  EXPECT_EQ(Ids(*(*c)->Search(q.data(), o)), ExactIds(*store, q.data(), 15));
}

TEST(CollectionTest, RefreshCompactsWhileSearchesGoOn) {
  testing::TempDir d;
  const std::string path = d.Join("s.db");
  auto store = MakeStore(path, 300);
  CollectionOptions opt;
  opt.max_overlay = 20;
  auto c = Collection::Open(path, opt);
  ASSERT_TRUE(c.ok());
  const auto q = Rows(1, 61)[0].embedding;
  QueryOptions o;
  o.k = 10;
  std::atomic<bool> done{false};
  std::atomic<int> answered{0};
  std::thread reader([&] {
    while (!done) {
      auto a = (*c)->Search(q.data(), o);
      if (a.ok() && a->neighbors.size() == 10) ++answered;
    }
  });
  while (answered == 0) std::this_thread::yield();
  ASSERT_TRUE(store->InsertBatch(Rows(200, 62, 7000)).ok());
  ASSERT_TRUE(store->Delete("id <= 30").ok());
  auto applied = (*c)->Refresh();
  done = true;
  reader.join();
  ASSERT_TRUE(applied.ok()) << applied.status().ToString();
  const CollectionState st = (*c)->state();
  EXPECT_NE(st.log.find("rewritten"), std::string::npos) << st.log;
  EXPECT_EQ(st.overlay_added + st.overlay_removed, 0u);
  EXPECT_EQ(st.rows, 470u);
  EXPECT_GT(answered.load(), 0);
  EXPECT_EQ(Ids(*(*c)->Search(q.data(), o)), ExactIds(*store, q.data(), 10));
}

TEST(CollectionTest, ADamagedSegmentIsReportedAndRebuilt) {
  testing::TempDir d;
  const std::string path = d.Join("s.db");
  auto store = MakeStore(path, 200);
  ASSERT_TRUE(Collection::Open(path).ok());
  {
    std::fstream f(SegmentPath(path), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40);  // inside the header
    f.put('\x7f');
  }
  auto c = Collection::Open(path);
  ASSERT_TRUE(c.ok());
  EXPECT_NE((*c)->state().notices.find("rebuilt"), std::string::npos) << (*c)->state().notices;
  // A flipped byte in the body: Verify names it; the header still maps.
  {
    std::fstream f(SegmentPath(path), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096 + 1000);
    f.put('\x55');
  }
  auto seg = VectorSegment::Map(SegmentPath(path), kDims);
  ASSERT_TRUE(seg.ok());
  EXPECT_EQ((*seg)->Verify().code(), Status::Code::kCorruption);
  // ... and an answer whose ranked vector differs from the store's rebuilds it and re-answers.
  {
    auto damaged = Collection::Open(path);
    ASSERT_TRUE(damaged.ok());
    auto row8 = store->GetItem(8);  // bytes 1000-1003 of the body: row 8's 27th float
    QueryOptions o;
    o.k = 3;
    auto a = (*damaged)->Search(row8->embedding.data(), o);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->neighbors[0].id, 8);
    EXPECT_LT(a->neighbors[0].distance, 1e-6);
    EXPECT_TRUE((*VectorSegment::Map(SegmentPath(path), kDims))->Verify().ok());
  }
  {
    std::fstream f(SegmentPath(path), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096 + 1000);
    f.put('\x55');
  }
  // Truncated: refused at map, rebuilt at open.
  std::filesystem::resize_file(SegmentPath(path), 5000);
  EXPECT_EQ(VectorSegment::Map(SegmentPath(path), kDims).status().code(),
            Status::Code::kCorruption);
  ASSERT_TRUE(Collection::Open(path).ok());
  EXPECT_TRUE((*VectorSegment::Map(SegmentPath(path), kDims))->Verify().ok());
}

TEST(CollectionIndexTest, PlanFiltersAndRowsChangedSinceTheSave) {
  testing::TempDir d;
  const std::string path = d.Join("s.db");
  auto store = MakeStore(path, 2000);
  IndexBuildParams bp;
  bp.threads = 2;
  ASSERT_TRUE(BuildStoreIndex(*store, bp).ok());
  // Changes after the save: answered exactly beside the mapped graph.
  auto added = Rows(30, 11, 9000);
  ASSERT_TRUE(store->InsertBatch(added).ok());
  ASSERT_TRUE(store->Delete("id BETWEEN 1 AND 100").ok());
  auto c = Collection::Open(path);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->state().index_rows, 2000u);
  EXPECT_EQ((*c)->state().index_lag, 130u);
  for (const std::string where :
       {"", "field(metadata,'part') = 'p1'", "id % 50 = 0", "id = 2001"}) {
    size_t found = 0, total = 0;
    for (size_t i = 0; i < 20; ++i) {
      const std::vector<float> qv =
          i < 10 ? added[i].embedding : Rows(1, static_cast<unsigned>(40 + i))[0].embedding;
      QueryOptions o;
      o.k = 10;
      o.where_sql = where;
      auto a = (*c)->Search(qv.data(), o);
      ASSERT_TRUE(a.ok());
      const auto want = ExactIds(*store, qv.data(), 10, where);
      EXPECT_EQ(a->neighbors.size(), want.size()) << where;
      std::set<int64_t> w(want.begin(), want.end());
      for (int64_t id : Ids(*a)) {
        EXPECT_GT(id, 100) << "a deleted row came back";
        found += w.count(id);
      }
      total += want.size();
      if (where.empty()) {
        EXPECT_NE(a->plan.find("HNSW"), std::string::npos);
      }
    }
    EXPECT_GE(static_cast<double>(found) / static_cast<double>(total), 0.97) << where;
  }
  // Exact on request.
  QueryOptions o;
  o.k = 10;
  o.exact = true;
  auto a = (*c)->Search(added[0].embedding.data(), o);
  EXPECT_EQ(Ids(*a), ExactIds(*store, added[0].embedding.data(), 10));
  EXPECT_EQ(a->plan, "exact scan");
}

TEST(CollectionIndexTest, AnIndexFarBehindTheTableIsNotUsed) {
  testing::TempDir d;
  const std::string path = d.Join("s.db");
  auto store = MakeStore(path, 300);
  IndexBuildParams bp;
  bp.threads = 1;
  ASSERT_TRUE(BuildStoreIndex(*store, bp).ok());
  ASSERT_TRUE(store->InsertBatch(Rows(400, 12, 4000)).ok());
  CollectionOptions opt;
  opt.max_index_lag = 100;
  auto c = Collection::Open(path, opt);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->state().index_rows, 0u);
  EXPECT_NE((*c)->state().notices.find("index build"), std::string::npos);
}

}  // namespace
}  // namespace nearlabel
