#include "nearlabel/dataset.h"

#include <filesystem>

#include <gtest/gtest.h>

#include "test_util.h"

namespace nearlabel {
namespace {

using testing::Encode;
using testing::SyntheticImage;
using testing::TempDir;
using testing::WriteFile;

std::string Label(const std::string& file, const std::string& part, const std::string& quality) {
  return R"({"images":[{"id":1,"file_name":")" + file +
         R"("}],"annotations":[{"id":1,"image_id":1,"attributes":{"part":")" + part +
         R"(","quality":")" + quality + R"("}}]})";
}

TEST(DatasetTest, FolderLayoutSkipsRootFilesAndReportsNonImages) {
  TempDir d;
  WriteFile(d.Join("README.md"), "about");
  WriteFile(d.Join("ok/a.jpg"), Encode(SyntheticImage(20, 20, 1), ".jpg"));
  WriteFile(d.Join("ok/sub/b.png"), Encode(SyntheticImage(20, 20, 2), ".png"));
  WriteFile(d.Join("bad/c.JPG"), Encode(SyntheticImage(20, 20, 3), ".jpg"));
  WriteFile(d.Join("bad/notes.txt"), "not an image");
  auto l = ListDataset(d.path(), DatasetLayout::kAuto);
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_EQ(l->layout, DatasetLayout::kFolder);
  ASSERT_EQ(l->items.size(), 3u);
  EXPECT_EQ(l->items[0].metadata["label"], "bad");
  EXPECT_EQ(l->items[2].metadata["label"], "ok");
  EXPECT_EQ(l->items[2].relative_path, "ok/sub/b.png");
  ASSERT_EQ(l->problems.size(), 1u);
  EXPECT_NE(l->problems[0].path.find("notes.txt"), std::string::npos);
  EXPECT_NE(l->problems[0].reason.find("not an image"), std::string::npos);
}

// A class folder reached both directly and through a symlink keeps its own label, whatever
// the names sort like, and loops end.
TEST(DatasetTest, SymlinksNeverRelabelOrLoop) {
  TempDir d;
  WriteFile(d.Join("a/x.jpg"), Encode(SyntheticImage(20, 20, 1), ".jpg"));
  WriteFile(d.Join("b/y.jpg"), Encode(SyntheticImage(20, 20, 2), ".jpg"));
  std::filesystem::create_directory_symlink("../b", d.Join("a/to_b"));
  std::filesystem::create_directory_symlink("..", d.Join("a/up"));
  auto l = ListDataset(d.path(), DatasetLayout::kFolder);
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  ASSERT_EQ(l->items.size(), 2u);
  EXPECT_EQ(l->items[0].metadata["label"], "a");
  EXPECT_EQ(l->items[1].metadata["label"], "b");
  EXPECT_EQ(l->items[1].image_path, d.Join("b/y.jpg"));
  EXPECT_EQ(l->problems.size(), 2u);  // a/to_b and a/up, each "listed already"
}

TEST(DatasetTest, OversizedMetadataIsAProblemNotARow) {
  TempDir d;
  WriteFile(d.Join("a.jpg"), Encode(SyntheticImage(20, 20, 1), ".jpg"));
  WriteFile(d.Join("b.jpg"), Encode(SyntheticImage(20, 20, 2), ".jpg"));
  WriteFile(d.Join("m.jsonl"),
            "{\"path\":\"a.jpg\",\"label\":\"ok\"}\n{\"path\":\"b.jpg\",\"note\":\"" +
                std::string(kMaxMetadataBytes, 'x') + "\"}\n");
  auto l = ListDataset(d.Join("m.jsonl"), DatasetLayout::kAuto);
  ASSERT_TRUE(l.ok());
  ASSERT_EQ(l->items.size(), 1u);
  ASSERT_EQ(l->problems.size(), 1u);
  EXPECT_NE(l->problems[0].reason.find("over the limit"), std::string::npos);
}

TEST(DatasetTest, AiHubLayoutAddsCategoriesAndReportsProblems) {
  TempDir d;
  const std::string base = d.Join("Sample");
  WriteFile(base + "/원천데이터/양품/exp1/MT_1.jpg", Encode(SyntheticImage(20, 20, 1), ".jpg"));
  WriteFile(base + "/원천데이터/불량/exp2/MT_2.jpg", Encode(SyntheticImage(20, 20, 2), ".jpg"));
  WriteFile(base + "/원천데이터/불량/exp2/MT_orphan.jpg",
            Encode(SyntheticImage(20, 20, 3), ".jpg"));
  WriteFile(base + "/라벨링데이터/양품/exp1/MT_1.json", Label("MT_1.jpg", "exp1", "good"));
  WriteFile(base + "/라벨링데이터/불량/exp2/MT_2.json", Label("MT_2.jpg", "exp2", "defect"));
  WriteFile(base + "/라벨링데이터/불량/exp2/MT_3.json", Label("MT_3.jpg", "exp2", "defect"));
  WriteFile(base + "/라벨링데이터/불량/exp2/MT_4.json", "{\"images\": [");
  WriteFile(base + "/라벨링데이터/불량/exp2/MT_5.json", R"({"images": 5})");
  auto l = ListDataset(d.path(), DatasetLayout::kAuto);
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_EQ(l->layout, DatasetLayout::kAiHub);
  ASSERT_EQ(l->items.size(), 2u);
  const auto& good = l->items[1].metadata;  // sorted by path: 불량 < 양품
  EXPECT_EQ(MetadataField(good, "quality"), "good");
  EXPECT_EQ(MetadataField(good, "part"), "exp1");
  EXPECT_EQ(good["annotations"][0]["attributes"]["categories"],
            nlohmann::json::array({"양품", "exp1"}));
  std::string all;
  for (const auto& p : l->problems) all += p.path + ": " + p.reason + "\n";
  EXPECT_EQ(l->problems.size(), 4u) << all;
  EXPECT_NE(all.find("MT_3.json: label points at a missing image 'MT_3.jpg'"), std::string::npos);
  EXPECT_NE(all.find("MT_4.json: unreadable JSON"), std::string::npos);
  EXPECT_NE(all.find("MT_5.json: label JSON has no images[0]"), std::string::npos);
  EXPECT_NE(all.find("MT_orphan.jpg: image has no label JSON"), std::string::npos);
}

TEST(DatasetTest, ManifestCsvAndJsonl) {
  TempDir d;
  WriteFile(d.Join("img/a b.jpg"), Encode(SyntheticImage(20, 20, 1), ".jpg"));
  WriteFile(d.Join("img/c.png"), Encode(SyntheticImage(20, 20, 2), ".png"));
  WriteFile(d.Join("m.csv"),
            "path,label,group\n\"img/a b.jpg\",cat,g1\nimg/c.png,dog,g2\nimg/x.png,dog,g3\n");
  auto l = ListDataset(d.Join("m.csv"), DatasetLayout::kAuto);
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_EQ(l->layout, DatasetLayout::kManifest);
  ASSERT_EQ(l->items.size(), 2u);
  EXPECT_EQ(MetadataField(l->items[0].metadata, "group"), "g1");
  ASSERT_EQ(l->problems.size(), 1u);
  EXPECT_NE(l->problems[0].reason.find("image not found"), std::string::npos);

  WriteFile(d.Join("m.jsonl"), "{\"file\": \"img/c.png\", \"label\": \"dog\"}\nnot json\n");
  l = ListDataset(d.Join("m.jsonl"), DatasetLayout::kAuto);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->items.size(), 1u);
  EXPECT_EQ(l->problems.size(), 1u);
}

TEST(DatasetTest, MissingRootAndBadLayout) {
  EXPECT_EQ(ListDataset("/nonexistent/x", DatasetLayout::kAuto).status().code(),
            Status::Code::kNotFound);
  EXPECT_FALSE(ParseDatasetLayout("zip").ok());
}

TEST(DatasetTest, SymlinkLoopIsReportedNotFollowedForever) {
  TempDir d;
  WriteFile(d.Join("a/x.jpg"), Encode(SyntheticImage(20, 20, 1), ".jpg"));
  std::filesystem::create_directory_symlink(d.Join("a"), d.Join("a/loop"));
  auto l = ListDataset(d.path(), DatasetLayout::kFolder);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->items.size(), 1u);
  EXPECT_EQ(l->problems.size(), 1u);
}

TEST(DatasetTest, MetadataFieldLookups) {
  auto j =
      nlohmann::json::parse(R"({"label":"x","n":3,"annotations":[{"attributes":{"part":"p"}}]})");
  EXPECT_EQ(MetadataField(j, "label"), "x");
  EXPECT_EQ(MetadataField(j, "n"), "3");
  EXPECT_EQ(MetadataField(j, "part"), "p");
  EXPECT_EQ(MetadataField(j, "/annotations/0/attributes/part"), "p");
  EXPECT_EQ(MetadataField(j, "missing"), "");
}

}  // namespace
}  // namespace nearlabel
