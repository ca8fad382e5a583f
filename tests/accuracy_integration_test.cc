// Leave-one-out accuracy on the shared datasets (NEARLABEL_DATASETS) with the default model:
// its plain preprocessing (no embedding options) against the reference pipeline's figures
// (../shared/REFERENCE.md), its card's default embedding options against those figures (issue
// 23: no dataset more than half a point below, the mean of cifar-10, caltech-101 and
// fashion-mnist 3 points above), and the reference SQL.
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

// The reference pipeline: the card's preprocessing, no embedding options.
ModelCard PlainCard() {
  auto card = FindModel("mobilenetv2-12-int8", ModelSearchDirs({}));
  EXPECT_TRUE(card.ok()) << card.status().ToString();
  auto plain = WithEmbeddingOptions(*card, EmbeddingOptions{});
  EXPECT_TRUE(plain.ok());
  return *plain;
}

Built IngestDataset(const std::string& dataset, const std::string& store_path, Backend backend,
                    const ModelCard& card = PlainCard()) {
  Built b;
  EmbedderOptions eo;
  eo.backend = backend;
  auto emb = CreateEmbedder(card, eo, nullptr);
  EXPECT_TRUE(emb.ok()) << emb.status().ToString();
  auto listing = ListDataset(dataset, DatasetLayout::kAuto);
  EXPECT_TRUE(listing.ok()) << listing.status().ToString();
  auto store = OpenStore(store_path, Store::Mode::kCreate);
  EXPECT_TRUE(store.ok());
  EXPECT_TRUE(PrepareStoreForDataset(**store, card, card.sha256, *listing).ok());
  auto rep = Ingest(*listing, **emb, **store, {}, {}, nullptr);
  EXPECT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_TRUE(UpdateStoreCentre(**store, card, nullptr).ok());
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

// Leave-one-out 1-NN accuracy (%) of folder dataset `name` ingested with `card`.
double FolderAccuracy(const std::string& root, const std::string& name, Backend backend,
                      const ModelCard& card, const testing::TempDir& tmp) {
  Built b = IngestDataset(root + "/" + name,
                          tmp.Join(name + "-" + BackendName(backend) + "-" +
                                   std::to_string(card.embedding.flip_average) + ".db"),
                          backend, card);
  EXPECT_EQ(b.report.failed, 0u) << name;
  auto table = b.store->LoadVectors("");
  EXPECT_TRUE(table.ok());
  EvalOptions o;
  o.label_field = "label";
  auto rep = LeaveOneOut(*table, o);
  EXPECT_TRUE(rep.ok());
  return rep.ok() ? 100 * rep->accuracy : 0;
}

// Ingests `name` with `backend` and checks leave-one-out 1-NN against the reference.
void CheckFolderDataset(const std::string& root, const std::string& name, Backend backend,
                        const testing::TempDir& tmp) {
  ASSERT_TRUE(kReference.count(name)) << "no reference figure for " << name;
  const double acc = FolderAccuracy(root, name, backend, PlainCard(), tmp);
  std::printf("[accuracy] %s on %s: %.2f%% (reference %.2f%%)\n", name.c_str(),
              BackendName(backend), acc, kReference.at(name));
  EXPECT_NEAR(acc, kReference.at(name), 0.5) << name << " on " << BackendName(backend);
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

TEST(AccuracyTest, DefaultEmbeddingOptionsGainThreePointsAndLoseNoDatasetHalfAPoint) {
  REQUIRE_DATA();
  testing::TempDir tmp;
  auto card = FindModel("mobilenetv2-12-int8", ModelSearchDirs({}));
  ASSERT_TRUE(card.ok());
  ASSERT_TRUE(card->embedding.flip_average) << "the card's default options changed";
  double gain3 = 0;
  size_t counted = 0;
  for (const std::string& name : SelectedDatasets()) {
    const double acc = FolderAccuracy(root, name, Backend::kOnnxRuntime, *card, tmp);
    const double before = kReference.at(name);
    std::printf("[accuracy] %s with the card's embedding options %s: %.2f%% (plain %.2f%%)\n",
                name.c_str(), EmbeddingOptionsJson(card->embedding).c_str(), acc, before);
    EXPECT_GE(acc, before - 0.5) << name;
    if (name == "cifar-10" || name == "caltech-101" || name == "fashion-mnist") {
      gain3 += (acc - before) / 3;
      ++counted;
    }
  }
  if (counted == 3) {
    EXPECT_GE(gain3, 3.0) << "mean gain over cifar-10, caltech-101, fashion-mnist";
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
