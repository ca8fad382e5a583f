#include "server/live_collection.h"

#include <cmath>

#include <gtest/gtest.h>

#include "test_util.h"

namespace nearlabel {
namespace {

NewItem Item(int i, const std::string& label) {
  // Unit vectors on a circle in the first two of 4 dims: row i is at angle i * 0.1.
  const float a = static_cast<float>(i) * 0.1f;
  return {"/x/" + std::to_string(i),
          "sha" + std::to_string(i),
          "{\"label\":\"" + label + "\"}",
          {std::cos(a), std::sin(a), 0, 0},
          ""};
}

std::unique_ptr<Store> MakeStore(const std::string& path, int rows) {
  auto s = OpenSqliteStore(path, Store::Mode::kCreate);
  EXPECT_TRUE(s.ok());
  CollectionInfo info;
  info.model = "m";
  info.model_sha256 = std::string(64, 'a');
  info.dims = 4;
  EXPECT_TRUE((*s)->EnsureCollection(info).ok());
  std::vector<NewItem> items;
  for (int i = 0; i < rows; ++i) items.push_back(Item(i, i % 2 ? "odd" : "even"));
  EXPECT_TRUE((*s)->InsertBatch(items).ok());
  return std::move(*s);
}

std::vector<int64_t> Ids(const std::vector<IdNeighbor>& v) {
  std::vector<int64_t> ids;
  for (const auto& n : v) ids.push_back(n.id);
  return ids;
}

TEST(LiveCollectionTest, SearchesBrowsesAndFollowsWrites) {
  testing::TempDir d;
  auto store = MakeStore(d.Join("s.db"), 10);
  std::string notice;
  auto c = LiveCollection::Load(*store, "label", &notice);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(notice.empty());
  EXPECT_FALSE((*c)->has_index());
  const float q[4] = {std::cos(0.3f), std::sin(0.3f), 0, 0};  // row id 4 (i = 3)
  std::string plan;
  auto found = (*c)->Search(q, 3, nullptr, 0, &plan);
  EXPECT_EQ(plan, "exact scan");
  ASSERT_EQ(found.size(), 3u);
  EXPECT_EQ(found[0].id, 4);
  EXPECT_NEAR(found[0].distance, 0.0f, 1e-6);
  const std::vector<int64_t> allowed = {1, 9};
  EXPECT_EQ(Ids((*c)->Search(q, 3, &allowed, 0, nullptr)), (std::vector<int64_t>{1, 9}));

  auto counts = (*c)->LabelCounts();
  ASSERT_EQ(counts.size(), 2u);
  EXPECT_EQ(counts[0].second, 5u);
  size_t total = 0;
  auto page = (*c)->Browse("odd", 1, 2, &total);
  EXPECT_EQ(total, 5u);
  ASSERT_EQ(page.size(), 2u);
  EXPECT_EQ(page[0].id, 4);  // odd rows are ids 2, 4, 6, ...; the second one first

  ASSERT_TRUE((*c)->Add(11, {0, 0, 1, 0}, "/new", "{\"label\":\"new\"}").ok());
  const float q2[4] = {0, 0, 1, 0};
  EXPECT_EQ((*c)->Search(q2, 1, nullptr, 0, nullptr)[0].id, 11);
  EXPECT_EQ((*c)->Add(12, {1, 0}, "/bad", "{}").code(), Status::Code::kMismatch);
  (*c)->Remove(4);
  EXPECT_NE((*c)->Search(q, 1, nullptr, 0, nullptr)[0].id, 4);
  LiveCollection::Row row;
  EXPECT_FALSE((*c)->Get(4, &row));
  ASSERT_TRUE((*c)->Get(11, &row));
  EXPECT_EQ(row.label, "new");
  EXPECT_EQ((*c)->size(), 10u);
}

TEST(LiveCollectionTest, ThroughTheIndexWithExactDistancesAndSavesItsChanges) {
  testing::TempDir d;
  auto store = MakeStore(d.Join("s.db"), 40);
  ASSERT_TRUE(BuildStoreIndex(*store, IndexBuildParams()).ok());
  auto c = LiveCollection::Load(*store, "label", nullptr);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE((*c)->has_index());
  const float q[4] = {std::cos(0.3f), std::sin(0.3f), 0, 0};
  std::string plan;
  auto found = (*c)->Search(q, 5, nullptr, 0, &plan);
  EXPECT_NE(plan.find("HNSW"), std::string::npos);
  ASSERT_EQ(found.size(), 5u);
  EXPECT_EQ(found[0].id, 4);
  EXPECT_EQ(found[0].distance, 1.0f - (q[0] * q[0] + q[1] * q[1]));  // float32, not half
  for (size_t i = 1; i < found.size(); ++i) EXPECT_LE(found[i - 1].distance, found[i].distance);

  (*c)->Remove(4);
  ASSERT_TRUE((*c)->SaveIndexIfChanged(*store).ok());
  IndexCatchUp cu;
  auto reopened = OpenStoreIndex(*store, SIZE_MAX, &cu);
  ASSERT_TRUE(reopened.ok());
  // The saved index lacks row 4, which the table still has (the server deletes from the
  // store first): one row to catch up, none to drop.
  EXPECT_EQ(cu.added, 1u);
  EXPECT_EQ(cu.removed, 0u);
}

// Rows of a shared store arrive twice (a server's own write, then the change feed) and out of
// id order (another writer committed a lower id just before); removed rows never come back.
TEST(LiveCollectionTest, OutOfOrderDuplicateAndRemovedRowsFromAChangeFeed) {
  testing::TempDir d;
  auto store = MakeStore(d.Join("s.db"), 4);  // ids 1..4
  auto c = LiveCollection::Load(*store, "label", nullptr, /*memory_index=*/true);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE((*c)->has_index());
  const NewItem a = Item(20, "late"), b = Item(10, "early");
  ASSERT_TRUE((*c)->Add(20, a.embedding, a.source, a.metadata_json).ok());
  ASSERT_TRUE((*c)->Add(10, b.embedding, b.source, b.metadata_json).ok());  // below 20
  ASSERT_TRUE((*c)->Add(20, a.embedding, a.source, a.metadata_json).ok());  // again
  EXPECT_EQ((*c)->size(), 6u);
  size_t total = 0;
  std::vector<int64_t> order;
  for (const auto& row : (*c)->Browse("", 0, 100, &total)) order.push_back(row.id);
  EXPECT_EQ(order, (std::vector<int64_t>{1, 2, 3, 4, 10, 20}));
  // Each row is found at distance 0 with its own label: vectors stayed with their ids.
  for (const NewItem* it : {&a, &b}) {
    std::string plan;
    auto found = (*c)->Search(it->embedding.data(), 1, nullptr, 0, &plan);
    ASSERT_EQ(found.size(), 1u);
    LiveCollection::Row row;
    ASSERT_TRUE((*c)->Get(found[0].id, &row));
    EXPECT_EQ(row.metadata, it->metadata_json) << plan;
    EXPECT_NEAR(found[0].distance, 0.0f, 1e-5);
  }
  (*c)->Remove(10);
  ASSERT_TRUE((*c)->Add(10, b.embedding, b.source, b.metadata_json).ok());  // a stale feed entry
  LiveCollection::Row row;
  EXPECT_FALSE((*c)->Get(10, &row));
  EXPECT_EQ((*c)->size(), 5u);
  // The in-memory index has no file: saving is a no-op, not an error.
  EXPECT_TRUE((*c)->SaveIndexIfChanged(*store).ok());
  StoreIndexState state = *ReadIndexState(*store);
  EXPECT_FALSE(state.exists);
}

}  // namespace
}  // namespace nearlabel
