// Embedders on the real shared models (NEARLABEL_MODELS).
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

class EmbedderTest : public ::testing::TestWithParam<std::pair<const char*, int>> {};

TEST_P(EmbedderTest, UnitVectorsDeterministicAndBatchIndependent) {
  REQUIRE_SHARED();
  auto [name, dims] = GetParam();
  auto card = FindModel(name, Dirs());
  ASSERT_TRUE(card.ok()) << card.status().ToString();
  auto emb = CreateOpenCvEmbedder(*card, {});
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

INSTANTIATE_TEST_SUITE_P(SharedModels, EmbedderTest,
                         ::testing::Values(std::make_pair("mobilenetv2-12-int8", 1280),
                                           std::make_pair("squeezenet1.1", 512),
                                           std::make_pair("densenet121-untrained", 1024)));

TEST(EmbedderErrorsTest, ChecksumAndLayerMismatchesAreClear) {
  REQUIRE_SHARED();
  auto card = FindModel("squeezenet1.1", Dirs());
  ASSERT_TRUE(card.ok());
  ModelCard wrong_sum = *card;
  wrong_sum.sha256 = std::string(64, '0');
  auto e1 = CreateOpenCvEmbedder(wrong_sum, {});
  EXPECT_EQ(e1.status().code(), Status::Code::kMismatch);
  EXPECT_NE(e1.status().message().find("checksum"), std::string::npos);
  ModelCard wrong_layer = *card;
  wrong_layer.feature_opencv_layer = "no_such_layer";
  auto e2 = CreateOpenCvEmbedder(wrong_layer, {});
  EXPECT_NE(e2.status().message().find("no_such_layer"), std::string::npos);
  ModelCard wrong_dims = *card;
  wrong_dims.dims = 77;
  auto e3 = CreateOpenCvEmbedder(wrong_dims, {});
  EXPECT_EQ(e3.status().code(), Status::Code::kMismatch);
  EXPECT_NE(e3.status().message().find("512 channels"), std::string::npos);
}

}  // namespace
}  // namespace nearlabel
