// Leave-one-out accuracy on the shared datasets (NEARLABEL_DATASETS) with the default model,
// against the reference pipeline's figures (../shared/REFERENCE.md), and the reference SQL.
// The folder datasets run on ONNX Runtime (NEARLABEL_ACCURACY_DATASETS, comma-separated, picks
// them; default "all", the six); neu-surface-defects also runs on OpenCV DNN, so both
// backends are held to the reference.
#include <filesystem>
#include <map>
#include <sstream>

#include <gtest/gtest.h>

#include "nearlabel/classify.h"
#include "nearlabel/ingest.h"
#include "nearlabel/model.h"
#include "test_util.h"

namespace nearlabel {
namespace {

const std::map<std::string, double> kReference = {
    {"casting", 98.08},       {"neu-surface-defects", 99.11},
    {"magnetic-tile", 95.71}, {"fashion-mnist", 78.93},
    {"cifar-10", 49.60},      {"caltech-101", 78.88}};

struct Built {
  std::unique_ptr<Store> store;
  IngestReport report;
};

Built IngestDataset(const std::string& dataset, const std::string& store_path, Backend backend) {
  Built b;
  auto card = FindModel("mobilenetv2-12-int8", ModelSearchDirs({}));
  EXPECT_TRUE(card.ok()) << card.status().ToString();
  EmbedderOptions eo;
  eo.backend = backend;
  auto emb = CreateEmbedder(*card, eo, nullptr);
  EXPECT_TRUE(emb.ok()) << emb.status().ToString();
  auto listing = ListDataset(dataset, DatasetLayout::kAuto);
  EXPECT_TRUE(listing.ok()) << listing.status().ToString();
  auto store = OpenStore(store_path, Store::Mode::kCreate);
  EXPECT_TRUE(store.ok());
  CollectionInfo info;
  info.model = card->name;
  info.model_sha256 = card->sha256;
  info.dims = card->dims;
  EXPECT_TRUE((*store)->EnsureCollection(info).ok());
  if (listing->layout == DatasetLayout::kAiHub) {
    EXPECT_TRUE((*store)->EnsureAiHubView().ok());
  }
  auto rep = Ingest(*listing, **emb, **store, {}, {}, nullptr);
  EXPECT_TRUE(rep.ok()) << rep.status().ToString();
  b.report = *rep;
  b.store = std::move(*store);
  return b;
}

std::vector<std::string> SelectedDatasets() {
  std::string sel = testing::EnvOr("NEARLABEL_ACCURACY_DATASETS", "all");
  std::vector<std::string> out;
  if (sel == "all") {
    for (const auto& [name, acc] : kReference) out.push_back(name);
    return out;
  }
  std::stringstream ss(sel);
  for (std::string s; std::getline(ss, s, ',');) out.push_back(s);
  return out;
}

// Ingests `name` with `backend` and checks leave-one-out 1-NN against the reference.
void CheckFolderDataset(const std::string& root, const std::string& name, Backend backend,
                        const testing::TempDir& tmp) {
  ASSERT_TRUE(kReference.count(name)) << "no reference figure for " << name;
  Built b = IngestDataset(root + "/" + name, tmp.Join(name + "-" + BackendName(backend) + ".db"),
                          backend);
  auto table = b.store->LoadVectors("");
  ASSERT_TRUE(table.ok());
  EvalOptions o;
  o.label_field = "label";
  auto rep = LeaveOneOut(*table, o);
  ASSERT_TRUE(rep.ok());
  const double acc = 100 * rep->accuracy;
  std::printf("[accuracy] %s on %s: %zu/%zu = %.2f%% (reference %.2f%%)\n", name.c_str(),
              BackendName(backend), rep->correct, rep->n, acc, kReference.at(name));
  EXPECT_NEAR(acc, kReference.at(name), 0.5) << name << " on " << BackendName(backend);
  EXPECT_EQ(b.report.failed, 0u) << name;
}

#define REQUIRE_DATA()                                              \
  const std::string root = testing::EnvOr("NEARLABEL_DATASETS");    \
  if (root.empty() || testing::EnvOr("NEARLABEL_MODELS").empty()) { \
    GTEST_SKIP() << "NEARLABEL_DATASETS / NEARLABEL_MODELS unset";  \
  }

TEST(AccuracyTest, FolderDatasetsOnOnnxRuntimeWithinHalfAPointOfReference) {
  REQUIRE_DATA();
  testing::TempDir tmp;
  for (const std::string& name : SelectedDatasets()) {
    CheckFolderDataset(root, name, Backend::kOnnxRuntime, tmp);
  }
}

TEST(AccuracyTest, OpenCvBackendWithinHalfAPointOfReference) {
  REQUIRE_DATA();
  testing::TempDir tmp;
  CheckFolderDataset(root, "neu-surface-defects", Backend::kOpenCv, tmp);
}

TEST(AccuracyTest, AiHubEvalWithinPartEqualsReferenceSql) {
  REQUIRE_DATA();
  testing::TempDir tmp;
  Built b = IngestDataset(root + "/magnetic-tile-aihub", tmp.Join("aihub.db"), Backend::kAuto);
  EXPECT_EQ(b.report.inserted, 350u);
  auto table = b.store->LoadVectors("");
  ASSERT_TRUE(table.ok());
  EvalOptions o;
  o.label_field = "quality";
  o.within_field = "part";
  auto rep = LeaveOneOut(*table, o);
  ASSERT_TRUE(rep.ok());
  // The reference design's query: for each row, the nearest other row of the same part.
  auto sql = b.store->Execute(R"sql(
    SELECT count(*) FROM aihub_labels a
    WHERE a.quality = (
      SELECT quality FROM (
        SELECT b.quality, vector_distance(a.embedding, b.embedding, 'COSINE') AS distance
        FROM aihub_labels b WHERE b.part = a.part AND b.id <> a.id)
      ORDER BY distance LIMIT 1))sql");
  ASSERT_TRUE(sql.ok()) << sql.status().ToString();
  const int64_t sql_correct = std::get<int64_t>(sql->back().rows[0][0]);
  std::printf("[accuracy] magnetic-tile-aihub quality within part: eval %zu/%zu, SQL %lld\n",
              rep->correct, rep->n, static_cast<long long>(sql_correct));
  EXPECT_EQ(static_cast<int64_t>(rep->correct), sql_correct);
  EXPECT_EQ(rep->n, 350u);
}

}  // namespace
}  // namespace nearlabel
