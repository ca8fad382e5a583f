#include "nearlabel/check.h"

#include <cstring>
#include <fstream>

#include <gtest/gtest.h>

#include "nearlabel/index.h"
#include "test_util.h"

namespace nearlabel {
namespace {

CollectionInfo Info() {
  CollectionInfo i;
  i.model = "m";
  i.model_sha256 = std::string(64, 'a');
  i.dims = 4;  // hnswlib needs 4-byte-aligned rows: dims 3 misaligns its link lists
  i.label_field = "label";
  return i;
}

NewItem Item(const std::string& name, std::vector<float> v) {
  return {"/data/" + name, "sha-" + name, "{\"label\":\"" + name + "\"}", std::move(v), ""};
}

// A store of four unit vectors whose row 2 then gets one exponent bit flipped (the file stays
// valid SQLite: integrity_check is ok).
std::unique_ptr<Store> StoreWithFlippedRow(const std::string& path, bool with_index) {
  auto s = OpenSqliteStore(path, Store::Mode::kCreate);
  EXPECT_TRUE(s.ok());
  EXPECT_TRUE((*s)->EnsureCollection(Info()).ok());
  EXPECT_TRUE((*s)->InsertBatch({Item("a", {1, 0, 0, 0}), Item("b", {0, 1, 0, 0}),
                                 Item("c", {0, 0, 1, 0}), Item("d", {0.6f, 0.8f, 0, 0})})
                  .ok());
  if (with_index) {
    EXPECT_TRUE(BuildStoreIndex(**s, IndexBuildParams{}).ok());
  }
  // Row 2 is (0, 1, 0, 0); 1.0f is 0x3F800000: one flipped exponent bit (bit 29) makes 2^64.
  EXPECT_TRUE(
      (*s)->Execute("UPDATE items SET embedding = X'00000000' || X'0000805F' || X'00000000' || "
                    "X'00000000' WHERE id = 2")
          .ok());
  return std::move(*s);
}

TEST(StoreCheckTest, DamagedEmbeddingsAreLeftOutOfLoadsAndReported) {
  testing::TempDir d;
  auto store = StoreWithFlippedRow(d.Join("s.db"), false);
  auto t = store->LoadVectors("");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->ids, (std::vector<int64_t>{1, 3, 4}));  // row 2 is never ranked
  ASSERT_EQ(t->damaged.size(), 1u);
  EXPECT_EQ(t->damaged[0].first, 2);
  EXPECT_NE(DamagedRowsNotice(*t, store->location()).find("row 2: its length is"),
            std::string::npos);
  auto report = CheckStore(*store);
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->ok());
  bool embeddings_bad = false;
  for (const CheckItem& c : report->items) {
    if (c.what == "file integrity") {
      EXPECT_TRUE(c.ok) << c.detail;
    }
    if (c.what == "embeddings") {
      embeddings_bad = !c.ok;
      EXPECT_NE(c.fix.find("id IN (2)"), std::string::npos) << c.fix;
    }
  }
  EXPECT_TRUE(embeddings_bad);
}

TEST(StoreCheckTest, AnIndexHoldingADamagedRowIsReported) {
  testing::TempDir d;
  auto store = StoreWithFlippedRow(d.Join("s.db"), true);
  auto report = CheckStore(*store);
  ASSERT_TRUE(report.ok());
  const CheckItem& index = report->items[report->items.size() - 2];
  EXPECT_EQ(index.what, "index");
  EXPECT_EQ(report->items.back().what, "vector segment");
  EXPECT_FALSE(index.ok);
  EXPECT_NE(index.detail.find("damaged (2)"), std::string::npos) << index.detail;
}

TEST(StoreCheckTest, AHealthyStorePassesAndADamagedFileIsRefusedForWriting) {
  testing::TempDir d;
  const std::string path = d.Join("s.db");
  {
    auto s = OpenSqliteStore(path, Store::Mode::kCreate);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->EnsureCollection(Info()).ok());
    std::vector<NewItem> items;
    for (int i = 0; i < 200; ++i) items.push_back(Item("r" + std::to_string(i), {1, 0, 0, 0}));
    ASSERT_TRUE((*s)->InsertBatch(items).ok());
    auto report = CheckStore(**s);
    ASSERT_TRUE(report.ok());
    EXPECT_TRUE(report->ok());
    auto root =
        (*s)->Execute("SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_items_1'");
    ASSERT_TRUE(root.ok());
    const int64_t page = std::get<int64_t>(root->back().rows[0][0]);
    (*s)->Execute("PRAGMA wal_checkpoint(TRUNCATE)");
    s->reset();
    // Three bytes of the sha256 UNIQUE index flipped: the file still opens and reads.
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    for (int off : {100, 300, 500}) {
      f.seekg((page - 1) * 4096 + 4096 - off);
      char c;
      f.read(&c, 1);
      c ^= 0x11;
      f.seekp((page - 1) * 4096 + 4096 - off);
      f.write(&c, 1);
    }
  }
  auto s = OpenSqliteStore(path, Store::Mode::kReadWrite);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  Status st = (*s)->CheckIntegrity();
  EXPECT_EQ(st.code(), Status::Code::kCorruption) << st.ToString();
  EXPECT_NE(st.message().find("nothing was changed"), std::string::npos);
}

}  // namespace
}  // namespace nearlabel
