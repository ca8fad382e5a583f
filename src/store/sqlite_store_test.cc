#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "common/fs.h"
#include "nearlabel/store.h"
#include "test_util.h"

namespace nearlabel {
namespace {

CollectionInfo Info(int dims = 3) {
  CollectionInfo i;
  i.model = "m";
  i.model_sha256 = std::string(64, 'a');
  i.dims = dims;
  i.label_field = "label";
  return i;
}

NewItem Item(const std::string& name, std::vector<float> v, std::string thumbnail = "") {
  return {"/data/" + name, "sha-" + name, "{\"label\":\"" + name + "\"}", std::move(v),
          std::move(thumbnail)};
}

TEST(SqliteStoreTest, RoundTripAndIdempotence) {
  testing::TempDir d;
  const std::string path = d.Join("s.db");
  {
    auto s = OpenSqliteStore(path, Store::Mode::kCreate);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    ASSERT_TRUE((*s)->EnsureCollection(Info()).ok());
    auto r = (*s)->InsertBatch({Item("a", {1, 0, 0}), Item("b", {0, 1, 0})});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->inserted, 2u);
    auto again = (*s)->InsertBatch({Item("a", {1, 0, 0}), Item("c", {0, 0, 1})});
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->inserted, 1u);
    EXPECT_EQ(again->duplicates, 1u);
    EXPECT_EQ(again->ids[0], r->ids[0]);
  }
  auto s = OpenSqliteStore(path, Store::Mode::kReadOnly);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*(*s)->Count(), 3);
  auto info = (*s)->GetCollection();
  ASSERT_TRUE(info.ok() && info->has_value());
  EXPECT_EQ((*info)->dims, 3);
  EXPECT_EQ((*info)->label_field, "label");
  auto t = (*s)->LoadVectors("");
  ASSERT_TRUE(t.ok());
  ASSERT_EQ(t->size(), 3u);
  EXPECT_EQ(t->row(1)[1], 1.0f);
  EXPECT_EQ(t->metadata[2], "{\"label\":\"c\"}");
  auto item = (*s)->GetItem(t->ids[0]);
  ASSERT_TRUE(item.ok());
  EXPECT_EQ(item->source, "/data/a");
  EXPECT_EQ(item->embedding, std::vector<float>({1, 0, 0}));
  auto filtered = (*s)->LoadVectors("field(metadata, 'label') IN ('b', 'c')");
  ASSERT_TRUE(filtered.ok());
  EXPECT_EQ(filtered->size(), 2u);
}

// A label holding a quote is selected by --within as written, and cannot end the literal.
TEST(SqliteStoreTest, WithinQuotesAnyLabel) {
  testing::TempDir d;
  auto s = OpenSqliteStore(d.Join("s.db"), Store::Mode::kCreate);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_TRUE((*s)->EnsureCollection(Info()).ok());
  ASSERT_TRUE((*s)->InsertBatch({Item("o'brien", {1, 0, 0}), Item("b", {0, 1, 0})}).ok());
  EXPECT_EQ(SqlStringLiteral("o'brien"), "'o''brien'");
  auto where = WithinToSql("label=o'brien");
  ASSERT_TRUE(where.ok());
  auto t = (*s)->LoadVectors(*where);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_EQ(t->size(), 1u);
  EXPECT_EQ(t->sources[0], "/data/o'brien");
  EXPECT_FALSE(WithinToSql("o'brien").ok());  // no '='
}

TEST(SqliteStoreTest, SqlValueTextShowsEachKind) {
  EXPECT_EQ(SqlValueText(SqlValue{}), "NULL");
  EXPECT_EQ(SqlValueText(SqlValue{int64_t{-42}}), "-42");
  EXPECT_EQ(SqlValueText(SqlValue{0.1}), "0.1");
  EXPECT_EQ(SqlValueText(SqlValue{std::string("good")}), "good");
  EXPECT_EQ(SqlValueText(SqlValue{std::vector<uint8_t>(5)}), "<blob 5 bytes>");
}

// Two processes creating the same new store at the same moment (two ingests started together)
// both succeed, with one row for their one image. Before the opening retried on locks, about
// 3 in 10 such starts failed ("database is locked", or a half-seen schema).
TEST(SqliteStoreTest, TwoProcessesCreatingOneStoreBothSucceed) {
  testing::TempDir dir;
  auto child = [](const std::string& path) {
    auto s = OpenStore(path, Store::Mode::kCreate);
    if (!s.ok() || !(*s)->EnsureCollection(Info(2)).ok()) return 1;
    return (*s)->InsertBatch({Item("a", {1, 0})}).ok() ? 0 : 1;
  };
  int failed = 0;
  for (int i = 0; i < 40; ++i) {
    const std::string path = dir.Join("s" + std::to_string(i) + ".db");
    pid_t a = fork();
    if (a == 0) _exit(child(path));
    pid_t b = fork();
    if (b == 0) _exit(child(path));
    int sa = 0, sb = 0;
    waitpid(a, &sa, 0);
    waitpid(b, &sb, 0);
    failed += (WIFEXITED(sa) && WEXITSTATUS(sa) == 0 ? 0 : 1) +
              (WIFEXITED(sb) && WEXITSTATUS(sb) == 0 ? 0 : 1);
    auto s = OpenStore(path, Store::Mode::kReadOnly);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    auto n = (*s)->Count();
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(*n, 1) << path;
  }
  EXPECT_EQ(failed, 0) << "of 80 processes";
}

TEST(SqliteStoreTest, BlobsRoundTripAndReadOnlyStoresReadThem) {
  testing::TempDir d;
  const std::string path = d.Join("s.db");
  std::string big(3 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131);
  {
    auto s = OpenSqliteStore(path, Store::Mode::kCreate);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->EnsureCollection(Info()).ok());
    EXPECT_EQ((*s)->GetBlob("anomaly/x").status().code(), Status::Code::kNotFound);
    ASSERT_TRUE((*s)->PutBlob("anomaly/x", "first").ok());
    ASSERT_TRUE((*s)->PutBlob("anomaly/x", big).ok());  // replaces
    ASSERT_TRUE((*s)->PutBlob("anomaly/y", "y").ok());
    ASSERT_TRUE((*s)->PutBlob("anomaly/y", "").ok());  // deletes
  }
  auto ro = OpenSqliteStore(path, Store::Mode::kReadOnly);
  ASSERT_TRUE(ro.ok());
  auto got = (*ro)->GetBlob("anomaly/x");
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(*got == big);  // binary, NULs included
  EXPECT_EQ((*ro)->GetBlob("anomaly/y").status().code(), Status::Code::kNotFound);
  EXPECT_FALSE((*ro)->PutBlob("anomaly/z", "z").ok());
}

TEST(SqliteStoreTest, RejectsWrongDimsAndOtherModelWithoutWriting) {
  testing::TempDir d;
  auto s = OpenSqliteStore(d.Join("s.db"), Store::Mode::kCreate);
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE((*s)->EnsureCollection(Info()).ok());
  auto bad = (*s)->InsertBatch({Item("a", {1, 0, 0}), Item("b", {1, 0})});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Status::Code::kMismatch);
  EXPECT_EQ(*(*s)->Count(), 0);  // the whole batch was refused
  CollectionInfo other = Info(4);
  other.model = "other";
  Status st = (*s)->EnsureCollection(other);
  EXPECT_EQ(st.code(), Status::Code::kMismatch);
  EXPECT_NE(st.message().find("use --model m"), std::string::npos);
}

TEST(SqliteStoreTest, WhereMustBeReadOnlyAndSingle) {
  testing::TempDir d;
  auto s = OpenSqliteStore(d.Join("s.db"), Store::Mode::kCreate);
  ASSERT_TRUE((*s)->EnsureCollection(Info()).ok());
  ASSERT_TRUE((*s)->InsertBatch({Item("a", {1, 0, 0})}).ok());
  EXPECT_FALSE((*s)->LoadVectors("1); DELETE FROM items; --").ok());
  EXPECT_FALSE((*s)->LoadVectors("no_such_column = 1").ok());
  EXPECT_EQ(*(*s)->Count(), 1);
}

TEST(SqliteStoreTest, ReadOnlyRefusesWrites) {
  testing::TempDir d;
  { ASSERT_TRUE(OpenSqliteStore(d.Join("s.db"), Store::Mode::kCreate).ok()); }
  auto s = OpenSqliteStore(d.Join("s.db"), Store::Mode::kReadOnly);
  ASSERT_TRUE(s.ok());
  auto r = (*s)->Execute("SELECT 1; DELETE FROM items");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("read-only"), std::string::npos);
}

TEST(SqliteStoreTest, ForeignFilesAreRefusedAndLeftUntouched) {
  testing::TempDir d;
  testing::WriteFile(d.Join("junk.db"), std::string(4096, 'j'));
  auto junk = OpenSqliteStore(d.Join("junk.db"), Store::Mode::kCreate);
  ASSERT_FALSE(junk.ok());
  EXPECT_NE(junk.status().message().find("not a nearlabel store"), std::string::npos);
  EXPECT_EQ(*ReadFileToString(d.Join("junk.db")), std::string(4096, 'j'));
  EXPECT_EQ(OpenSqliteStore(d.Join("missing.db"), Store::Mode::kReadOnly).status().code(),
            Status::Code::kNotFound);
  {
    auto s = OpenSqliteStore(d.Join("new.db"), Store::Mode::kCreate);
    ASSERT_TRUE((*s)->Execute("PRAGMA user_version = 99").ok());
  }
  auto newer = OpenSqliteStore(d.Join("new.db"), Store::Mode::kReadOnly);
  ASSERT_FALSE(newer.ok());
  EXPECT_NE(newer.status().message().find("newer"), std::string::npos);
}

TEST(SqliteStoreTest, DeleteNeverReusesIdsAndRefusesNoCondition) {
  testing::TempDir d;
  auto s = OpenSqliteStore(d.Join("s.db"), Store::Mode::kCreate);
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE((*s)->EnsureCollection(Info()).ok());
  auto r = (*s)->InsertBatch({Item("a", {1, 0, 0}), Item("b", {0, 1, 0}), Item("c", {0, 0, 1})});
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE((*s)->Delete("").ok());
  EXPECT_FALSE((*s)->Delete("1; DROP TABLE items").ok());
  auto del = (*s)->Delete("field(metadata, 'label') IN ('b', 'c')");
  ASSERT_TRUE(del.ok()) << del.status().ToString();
  EXPECT_EQ(*del, std::vector<int64_t>({r->ids[1], r->ids[2]}));
  EXPECT_EQ(*(*s)->Count(), 1);
  // The highest id (c's) was deleted: a new row must not get it again.
  auto next = (*s)->InsertBatch({Item("d", {1, 1, 0})});
  ASSERT_TRUE(next.ok());
  EXPECT_GT(next->ids[0], r->ids[2]);
  EXPECT_EQ(*(*s)->SelectIds(""), std::vector<int64_t>({r->ids[0], next->ids[0]}));
  ASSERT_TRUE((*s)->PutSettings({{"index.file", "x"}}).ok());
  EXPECT_EQ(*(*s)->GetSetting("index.file"), "x");
  ASSERT_TRUE((*s)->PutSettings({{"index.file", ""}}).ok());
  EXPECT_EQ(*(*s)->GetSetting("index.file"), "");
}

TEST(SqliteStoreTest, ThumbnailsAreStoredAndDeletedWithTheirRow) {
  testing::TempDir d;
  auto s = OpenSqliteStore(d.Join("s.db"), Store::Mode::kCreate);
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE((*s)->EnsureCollection(Info()).ok());
  const std::string jpeg("\xff\xd8 thumbnail \0 bytes\xff\xd9", 23);
  auto r = (*s)->InsertBatch({Item("a", {1, 0, 0}, jpeg), Item("b", {0, 1, 0})});
  ASSERT_TRUE(r.ok());
  auto t = (*s)->GetThumbnail(r->ids[0]);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(*t, jpeg);
  EXPECT_EQ((*s)->GetThumbnail(r->ids[1]).status().code(), Status::Code::kNotFound);
  ASSERT_TRUE((*s)->Delete("id = " + std::to_string(r->ids[0])).ok());
  EXPECT_EQ((*s)->GetThumbnail(r->ids[0]).status().code(), Status::Code::kNotFound);
}

TEST(SqliteStoreTest, FormatOneStoreIsUpgradedOnlyWhenOpenedForWriting) {
  testing::TempDir d;
  const std::string path = d.Join("old.db");
  {
    auto s = OpenSqliteStore(path, Store::Mode::kCreate);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->EnsureCollection(Info()).ok());
    ASSERT_TRUE((*s)->InsertBatch({Item("a", {1, 0, 0})}).ok());
    // Make it a format-1 file: no thumbnails table.
    ASSERT_TRUE((*s)->Execute("DROP TABLE thumbnails; PRAGMA user_version = 1").ok());
  }
  {
    auto ro = OpenSqliteStore(path, Store::Mode::kReadOnly);
    ASSERT_TRUE(ro.ok()) << ro.status().ToString();
    EXPECT_EQ((*ro)->GetThumbnail(1).status().code(), Status::Code::kNotFound);
    auto v = (*ro)->Execute("PRAGMA user_version");
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(std::get<int64_t>((*v)[0].rows[0][0]), 1);  // read-only: untouched
  }
  auto rw = OpenSqliteStore(path, Store::Mode::kCreate);
  ASSERT_TRUE(rw.ok()) << rw.status().ToString();
  auto r = (*rw)->InsertBatch({Item("b", {0, 1, 0}, "jpeg")});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*(*rw)->GetThumbnail(r->ids[0]), "jpeg");
  EXPECT_EQ(*(*rw)->Count(), 2);
}

TEST(SqliteStoreTest, InsertsKeepTheDirectoryEverySourceShares) {
  testing::TempDir d;
  auto s = OpenSqliteStore(d.Join("s.db"), Store::Mode::kCreate);
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE((*s)->EnsureCollection(Info()).ok());
  auto at = [](std::string source, std::string sha) {
    NewItem it = Item(sha, {1, 0, 0});
    it.source = std::move(source);
    return it;
  };
  ASSERT_TRUE((*s)->InsertBatch({at("/data/a/x.jpg", "1"), at("/data/b/y.jpg", "2")}).ok());
  EXPECT_EQ(*SourceRoot(**s), "/data/");
  EXPECT_EQ(*(*s)->GetSetting("source_root"), "/data/");           // kept, no pass over the rows
  ASSERT_TRUE((*s)->InsertBatch({at("upload:z.jpg", "3")}).ok());  // not a path: no change
  EXPECT_EQ(*SourceRoot(**s), "/data/");
  ASSERT_TRUE((*s)->InsertBatch({at("/data/x.jpg", "1")}).ok());  // a duplicate: no change
  EXPECT_EQ(*SourceRoot(**s), "/data/");
  ASSERT_TRUE((*s)->InsertBatch({at("/other/q.jpg", "4")}).ok());
  EXPECT_EQ(*SourceRoot(**s), "/");
}

}  // namespace
}  // namespace nearlabel
