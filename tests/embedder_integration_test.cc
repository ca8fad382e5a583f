// Embedders on the real shared models (NEARLABEL_MODELS).
#include <algorithm>
#include <cmath>
#include <filesystem>

#include <gtest/gtest.h>

#include "common/fs.h"
#include "nearlabel/ingest.h"
#include "nearlabel/model.h"
#include "test_util.h"

namespace nearlabel {
namespace {

std::vector<std::string> Dirs() { return ModelSearchDirs({}); }

#define REQUIRE_SHARED() \
  if (testing::EnvOr("NEARLABEL_MODELS").empty()) GTEST_SKIP() << "NEARLABEL_MODELS unset"

double Cosine(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d += a[i] * b[i];
  return d;
}

struct ModelCase {
  const char* name;
  int dims;
  Backend backend;
};

class EmbedderTest : public ::testing::TestWithParam<ModelCase> {};

TEST_P(EmbedderTest, UnitVectorsDeterministicAndBatchIndependent) {
  REQUIRE_SHARED();
  auto [name, dims, backend] = GetParam();
  auto card = FindModel(name, Dirs());
  ASSERT_TRUE(card.ok()) << card.status().ToString();
  EmbedderOptions eo;
  eo.backend = backend;
  auto emb = CreateEmbedder(*card, eo, nullptr);
  ASSERT_TRUE(emb.ok()) << emb.status().ToString();
  EXPECT_EQ((*emb)->dims(), dims);
  testing::TempDir d;
  std::vector<std::string> paths;
  for (int i = 0; i < 3; ++i) {
    paths.push_back(d.Join("img" + std::to_string(i) + ".png"));
    testing::WriteFile(paths.back(),
                       testing::Encode(testing::SyntheticImage(120 + 30 * i, 90, i), ".png"));
  }
  auto batch = EmbedFiles(paths, **emb);
  auto single = EmbedFiles({paths[1]}, **emb);
  ASSERT_TRUE(batch[1].status.ok()) << batch[1].status.ToString();
  EXPECT_EQ(static_cast<int>(batch[1].embedding.size()), dims);
  EXPECT_NEAR(Cosine(batch[1].embedding, batch[1].embedding), 1.0, 1e-4);  // unit length
  EXPECT_GE(Cosine(batch[1].embedding, single[0].embedding), 0.999);
  EXPECT_LT(Cosine(batch[0].embedding, batch[2].embedding), 0.9999);  // different images differ
}

INSTANTIATE_TEST_SUITE_P(
    SharedModels, EmbedderTest,
    ::testing::Values(ModelCase{"mobilenetv2-12-int8", 1280, Backend::kOpenCv},
                      ModelCase{"squeezenet1.1", 512, Backend::kOpenCv},
                      ModelCase{"densenet121-untrained", 1024, Backend::kOpenCv},
                      ModelCase{"mobilenetv2-12-int8", 1280, Backend::kOnnxRuntime},
                      ModelCase{"squeezenet1.1", 512, Backend::kOnnxRuntime},
                      ModelCase{"densenet121-untrained", 1024, Backend::kOnnxRuntime}));

// A session's share of a batch gives the same vectors whether it runs one image at a time
// (run_batch 1, DenseNet's cards) or all at once: 7 images over 2 sessions of 4.
TEST(OnnxRuntimeRunBatchTest, RunBatchChangesNoVector) {
  REQUIRE_SHARED();
  auto card = FindModel("mobilenetv2-12-int8", Dirs());
  ASSERT_TRUE(card.ok()) << card.status().ToString();
  testing::TempDir d;
  std::vector<std::string> paths;
  for (int i = 0; i < 7; ++i) {
    paths.push_back(d.Join("img" + std::to_string(i) + ".png"));
    testing::WriteFile(paths.back(),
                       testing::Encode(testing::SyntheticImage(100 + 20 * i, 80, i), ".png"));
  }
  std::vector<std::vector<EmbeddedFile>> runs;
  for (int run_batch : {1, 4}) {
    EmbedderOptions eo;
    eo.threads = 2;
    eo.sessions = 2;
    eo.max_batch = 8;
    eo.run_batch = run_batch;
    auto e = CreateOnnxRuntimeEmbedder(*card, eo);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    runs.push_back(EmbedFiles(paths, **e));
  }
  for (size_t i = 0; i < paths.size(); ++i) {
    ASSERT_TRUE(runs[0][i].status.ok() && runs[1][i].status.ok()) << i;
    EXPECT_GE(Cosine(runs[0][i].embedding, runs[1][i].embedding), 0.9999) << i;
  }
  EXPECT_LT(Cosine(runs[0][0].embedding, runs[0][6].embedding), 0.9999);  // images differ
}

// Real images from several shared datasets (two per dataset), or none without them.
std::vector<std::string> SampleImages() {
  std::vector<std::string> out;
  const std::string root = testing::EnvOr("NEARLABEL_DATASETS");
  if (root.empty()) return out;
  for (const char* ds : {"caltech-101", "casting", "neu-surface-defects", "magnetic-tile",
                         "cifar-10", "fashion-mnist"}) {
    std::vector<std::string> files;
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(root + "/" + ds, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      const auto ext = it->path().extension().string();
      if (ext == ".jpg" || ext == ".png") files.push_back(it->path().string());
    }
    std::sort(files.begin(), files.end());
    for (size_t i = 0; i < files.size() && i < 2; ++i) {
      out.push_back(files[i * (files.size() / 2)]);
    }
  }
  return out;
}

class BackendAgreementTest : public ::testing::TestWithParam<const char*> {};

// The acceptance rule of the ORT backend: the same card gives the same features on both
// engines, cosine >= 0.999 for every image.
TEST_P(BackendAgreementTest, SameCardSameFeaturesOnBothBackends) {
  REQUIRE_SHARED();
  const auto images = SampleImages();
  if (images.empty()) GTEST_SKIP() << "NEARLABEL_DATASETS unset";
  auto card = FindModel(GetParam(), Dirs());
  ASSERT_TRUE(card.ok()) << card.status().ToString();
  auto ocv = CreateOpenCvEmbedder(*card, {});
  auto ort = CreateOnnxRuntimeEmbedder(*card, {});
  ASSERT_TRUE(ocv.ok()) << ocv.status().ToString();
  ASSERT_TRUE(ort.ok()) << ort.status().ToString();
  auto a = EmbedFiles(images, **ocv);
  auto b = EmbedFiles(images, **ort);
  double worst = 1;
  for (size_t i = 0; i < images.size(); ++i) {
    ASSERT_TRUE(a[i].status.ok() && b[i].status.ok()) << images[i];
    const double c = Cosine(a[i].embedding, b[i].embedding);
    worst = std::min(worst, c);
    EXPECT_GE(c, 0.999) << images[i];
  }
  std::printf("[agreement] %s: %zu images, lowest cosine 1 - %.2g\n", GetParam(), images.size(),
              1 - worst);
}

INSTANTIATE_TEST_SUITE_P(SharedModels, BackendAgreementTest,
                         ::testing::Values("mobilenetv2-12-int8", "squeezenet1.1",
                                           "densenet121-untrained"));

using Factory = Result<std::unique_ptr<Embedder>> (*)(const ModelCard&, const EmbedderOptions&);

// `card` with one field changed by `edit` must be refused by `create` with `code` and a
// message naming `fragment`.
template <typename Edit>
void ExpectRefused(ModelCard card, Factory create, Edit edit, Status::Code code,
                   const std::string& fragment) {
  edit(card);
  auto e = create(card, {});
  ASSERT_FALSE(e.ok()) << "accepted a card that should be refused (" << fragment << ")";
  EXPECT_EQ(e.status().code(), code) << e.status().message();
  EXPECT_NE(e.status().message().find(fragment), std::string::npos) << e.status().message();
}

// Both backends read the ONNX file through ReadModelFile: a wrong checksum in the card must
// be refused, naming the checksum, whichever backend is asked.
void ExpectChecksumRefused(const ModelCard& card, Factory create) {
  ExpectRefused(
      card, create, [](ModelCard& c) { c.sha256 = std::string(64, '0'); }, Status::Code::kMismatch,
      "checksum");
}

TEST(OnnxRuntimeErrorsTest, CardMistakesAreClear) {
  REQUIRE_SHARED();
  auto card = FindModel("mobilenetv2-12-int8", Dirs());
  ASSERT_TRUE(card.ok());
  ExpectChecksumRefused(*card, CreateOnnxRuntimeEmbedder);
  ExpectRefused(
      *card, CreateOnnxRuntimeEmbedder,
      [](ModelCard& c) { c.feature_onnx_tensor = "no_such_tensor"; }, Status::Code::kNotFound,
      "no_such_tensor");
  ExpectRefused(
      *card, CreateOnnxRuntimeEmbedder, [](ModelCard& c) { c.dims = 77; }, Status::Code::kMismatch,
      "1280 channels");
  ExpectRefused(
      *card, CreateOnnxRuntimeEmbedder, [](ModelCard& c) { c.input_name = "pixels"; },
      Status::Code::kNotFound, "has: input");
  ModelCard wrong_size = *card;
  wrong_size.preprocess.width = wrong_size.preprocess.height = 299;
  auto e5 = CreateOnnxRuntimeEmbedder(wrong_size, {});
  if (!e5.ok()) {  // a dynamic-size input accepts 299; a fixed one must say why not
    EXPECT_EQ(e5.status().code(), Status::Code::kMismatch) << e5.status().message();
  }
}

TEST(OnnxRuntimeErrorsTest, FixedBatchModelLimitsTheBatch) {
  REQUIRE_SHARED();
  auto card = FindModel("squeezenet1.1", Dirs());  // its card says max_batch 1
  ASSERT_TRUE(card.ok());
  EmbedderOptions eo;
  eo.max_batch = 16;
  auto e = CreateOnnxRuntimeEmbedder(*card, eo);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ((*e)->max_batch(), 1);
  std::vector<float> in(2 * 3 * 224 * 224, 0.f), out(2 * 512);
  EXPECT_EQ((*e)->Embed(in.data(), 2, out.data()).code(), Status::Code::kInvalidArgument);
}

TEST(OnnxRuntimeErrorsTest, ALaneNeverRunsMoreThanTheCardsMaxBatch) {
  REQUIRE_SHARED();
  auto card = FindModel("mobilenetv2-12-int8", Dirs());  // a dynamic batch dimension
  ASSERT_TRUE(card.ok());
  card->max_batch = 2;  // e.g. a model too big in memory for more per run
  EmbedderOptions eo;
  eo.sessions = 2;
  eo.threads = 2;
  eo.run_batch = 8;  // more per run than the card allows
  auto e = CreateOnnxRuntimeEmbedder(*card, eo);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ((*e)->lanes(), 2);
  EXPECT_EQ((*e)->lane_batch(), 2);
  std::vector<float> in(3 * 3 * 224 * 224, 0.f), out(3 * card->dims);
  EXPECT_TRUE((*e)->EmbedOnLane(1, in.data(), 2, out.data()).ok());
  EXPECT_EQ((*e)->EmbedOnLane(1, in.data(), 3, out.data()).code(), Status::Code::kInvalidArgument);
}

TEST(EmbedderErrorsTest, ChecksumAndLayerMismatchesAreClear) {
  REQUIRE_SHARED();
  auto card = FindModel("squeezenet1.1", Dirs());
  ASSERT_TRUE(card.ok());
  ExpectChecksumRefused(*card, CreateOpenCvEmbedder);
  ExpectRefused(
      *card, CreateOpenCvEmbedder, [](ModelCard& c) { c.feature_opencv_layer = "no_such_layer"; },
      Status::Code::kNotFound, "no_such_layer");
  ExpectRefused(
      *card, CreateOpenCvEmbedder, [](ModelCard& c) { c.dims = 77; }, Status::Code::kMismatch,
      "512 channels");
}

}  // namespace
}  // namespace nearlabel
