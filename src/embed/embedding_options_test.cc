// Embedding options: the card section, the canonical JSON stores record, and the transforms.
#include <cmath>

#include <gtest/gtest.h>

#include "embed/embedding_transform.h"
#include "nearlabel/model.h"

namespace nearlabel {
namespace {

std::string Card(const std::string& embedding) {
  return R"({"name": "m", "file": "m.onnx", "input": {"name": "in", "width": 32, "height": 32},
  "preprocess": {"resize": "shorter_side_crop"},
  "feature": {"onnx_tensor": "f", "dims": 4})" +
         (embedding.empty() ? "" : ", \"embedding\": " + embedding) + "}";
}

TEST(EmbeddingOptionsTest, CardSectionSetsOptionsAndResize) {
  auto c = ParseModelCard(Card(R"({"resize": "direct", "flip_average": true, "power": 0.5,
                                   "centre": true})"),
                          "c");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->embedding.flip_average);
  EXPECT_TRUE(c->embedding.centre);
  EXPECT_DOUBLE_EQ(c->embedding.power, 0.5);
  EXPECT_EQ(c->preprocess.resize, PreprocessSpec::Resize::kDirect);
  EXPECT_EQ(c->preprocess_resize, "shorter_side_crop");  // as the preprocess section says
  // Patches keep the card's own preprocessing and no options.
  EXPECT_EQ(c->patch_preprocess.resize, PreprocessSpec::Resize::kShorterSideCrop);
}

TEST(EmbeddingOptionsTest, NoSectionMeansNoOptions) {
  auto c = ParseModelCard(Card(""), "c");
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->embedding.flip_average);
  EXPECT_FALSE(c->embedding.centre);
  EXPECT_EQ(c->embedding.power, 1);
  EXPECT_EQ(c->embedding.resize, "shorter_side_crop");
}

TEST(EmbeddingOptionsTest, BadSectionsAreRefusedWithTheReason) {
  for (const char* bad : {R"({"flip": true})", R"({"power": 0})", R"({"power": 1.5})",
                          R"({"resize": "stretch"})", R"({"centre": "yes"})", R"([1])"}) {
    auto c = ParseModelCard(Card(bad), "c");
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_NE(c.status().message().find("embedding"), std::string::npos) << c.status().message();
  }
}

TEST(EmbeddingOptionsTest, JsonRoundTripsAndIsCanonical) {
  EmbeddingOptions e;
  e.resize = "direct";
  e.flip_average = true;
  e.power = 0.5;
  e.centre = true;
  const std::string text = EmbeddingOptionsJson(e);
  EXPECT_EQ(text, R"({"centre":true,"flip_average":true,"power":0.5,"resize":"direct"})");
  auto back = ParseEmbeddingOptions(text, "store");
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(*back == e);
  EXPECT_FALSE(ParseEmbeddingOptions("{not json", "store").ok());
}

TEST(EmbeddingOptionsTest, WithEmbeddingOptionsKeepsThePreprocessResizeWhenUnset) {
  auto c = ParseModelCard(Card(R"({"resize": "direct"})"), "c");
  ASSERT_TRUE(c.ok());
  auto plain = WithEmbeddingOptions(*c, EmbeddingOptions{});
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->preprocess.resize, PreprocessSpec::Resize::kShorterSideCrop);
  EXPECT_EQ(plain->embedding.resize, "shorter_side_crop");
}

TEST(EmbeddingTransformTest, MirrorReversesEveryRowOfEveryChannel) {
  const int w = 3, h = 2;
  std::vector<float> img(2 * 3 * w * h), out(img.size());
  for (size_t i = 0; i < img.size(); ++i) img[i] = static_cast<float>(i);
  MirrorImages(img.data(), 2, w, h, out.data());
  for (size_t r = 0; r < img.size() / w; ++r) {
    for (int x = 0; x < w; ++x) EXPECT_EQ(out[r * w + x], img[r * w + (w - 1 - x)]);
  }
}

TEST(EmbeddingTransformTest, PowerNormalizeTakesSignedRootsAndNormalises) {
  std::vector<float> v{4, -9, 0, 0};
  PowerNormalize(v.data(), v.size(), 0.5);
  const float n = std::sqrt(4.f + 9.f);
  EXPECT_NEAR(v[0], 2 / n, 1e-6);
  EXPECT_NEAR(v[1], -3 / n, 1e-6);
  std::vector<float> zero(3, 0.f);
  PowerNormalize(zero.data(), zero.size(), 0.5);  // stays zero, no NaN
  EXPECT_EQ(zero[0], 0.f);
}

}  // namespace
}  // namespace nearlabel
