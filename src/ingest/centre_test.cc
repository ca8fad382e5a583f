// Centring a store on its mean (UpdateStoreCentre) and the embedding options a store records.
#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "nearlabel/collection.h"
#include "nearlabel/ingest.h"
#include "nearlabel/store.h"
#include "test_util.h"

namespace nearlabel {
namespace {

constexpr int kDims = 8;

std::vector<float> Unit(std::mt19937* rng) {
  std::uniform_real_distribution<float> u(0, 1);  // non-negative, as ReLU features are
  std::vector<float> v(kDims);
  double n = 0;
  for (float& x : v) {
    x = u(*rng);
    n += x * x;
  }
  for (float& x : v) x = static_cast<float>(x / std::sqrt(n));
  return v;
}

ModelCard CentredCard() {
  ModelCard c;
  c.name = "m";
  c.dims = kDims;
  c.embedding.centre = true;
  return c;
}

CollectionInfo Info() {
  CollectionInfo i;
  i.model = "m";
  i.model_sha256 = std::string(64, 'a');
  i.dims = kDims;
  i.embedding = EmbeddingOptionsJson(CentredCard().embedding);
  return i;
}

// Inserts `raw` unit vectors as the embedder would for the store's current centre.
void InsertAsEmbedded(Store& store, const std::vector<std::vector<float>>& raw, int from) {
  auto info = store.GetCollection();
  ASSERT_TRUE(info.ok() && *info);
  auto card = CardWithStoreOptions(CentredCard(), **info);
  ASSERT_TRUE(card.ok()) << card.status().ToString();
  std::vector<NewItem> items;
  for (size_t i = 0; i < raw.size(); ++i) {
    std::vector<float> v = raw[i];
    if (!card->centre_mean.empty()) {
      double n = 0;
      for (int k = 0; k < kDims; ++k) {
        v[k] -= card->centre_mean[k];
        n += v[k] * v[k];
      }
      for (float& x : v) x = static_cast<float>(x / std::sqrt(n));
    }
    const std::string name = std::to_string(from + static_cast<int>(i));
    items.push_back({"/d/" + name, "sha" + name, "{}", v, ""});
  }
  ASSERT_TRUE(store.InsertBatch(items).ok());
}

// Every stored row is normalize(raw - mean of all raw rows so far) to float precision.
void ExpectCentredOn(Store& store, const std::vector<std::vector<float>>& raw) {
  std::vector<double> mean(kDims, 0);
  for (const auto& v : raw) {
    for (int k = 0; k < kDims; ++k) mean[k] += v[k] / raw.size();
  }
  auto t = store.LoadVectors("");
  ASSERT_TRUE(t.ok());
  ASSERT_EQ(t->size(), raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    std::vector<double> want(kDims);
    double n = 0;
    for (int k = 0; k < kDims; ++k) {
      want[k] = raw[i][k] - mean[k];
      n += want[k] * want[k];
    }
    for (int k = 0; k < kDims; ++k) EXPECT_NEAR(t->row(i)[k], want[k] / std::sqrt(n), 2e-5);
  }
}

TEST(CentreTest, UncentreRecoversTheUnitVector) {
  std::mt19937 rng(3);
  std::vector<float> mean(kDims, 0);
  for (int i = 0; i < 50; ++i) {
    auto v = Unit(&rng);
    for (int k = 0; k < kDims; ++k) mean[k] += v[k] / 50;
  }
  const auto x = Unit(&rng);
  std::vector<float> y(kDims);
  double n = 0;
  for (int k = 0; k < kDims; ++k) {
    y[k] = x[k] - mean[k];
    n += y[k] * y[k];
  }
  for (float& v : y) v = static_cast<float>(v / std::sqrt(n));
  Uncentre(y.data(), mean);
  for (int k = 0; k < kDims; ++k) EXPECT_NEAR(y[k], x[k], 1e-5);
}

TEST(CentreTest, FirstIngestCentresAndTheMeanFollowsWhenTheStoreDoubles) {
  testing::TempDir d;
  auto store = OpenStore(d.Join("s.db"), Store::Mode::kCreate);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->EnsureCollection(Info()).ok());
  std::mt19937 rng(1);
  std::vector<std::vector<float>> raw;
  for (int i = 0; i < 20; ++i) raw.push_back(Unit(&rng));
  InsertAsEmbedded(**store, raw, 0);
  auto card = [&] { return *CardWithStoreOptions(CentredCard(), **(*store)->GetCollection()); };
  std::string what;
  ASSERT_TRUE(UpdateStoreCentre(**store, card(), &what).ok());
  EXPECT_NE(what.find("centred 20 rows"), std::string::npos) << what;
  ExpectCentredOn(**store, raw);

  // 10 more rows (1.5x): embedded on the old mean, which stays.
  std::vector<std::vector<float>> more;
  for (int i = 0; i < 10; ++i) more.push_back(Unit(&rng));
  InsertAsEmbedded(**store, more, 20);
  ASSERT_TRUE(UpdateStoreCentre(**store, card(), &what).ok());
  EXPECT_EQ(what, "");
  // 10 more (2x): every row recentred on the mean of all 40.
  for (int i = 0; i < 10; ++i) more.push_back(Unit(&rng));
  InsertAsEmbedded(**store, {more.begin() + 10, more.end()}, 30);
  ASSERT_TRUE(UpdateStoreCentre(**store, card(), &what).ok());
  EXPECT_NE(what.find("centred 40 rows"), std::string::npos) << what;
  raw.insert(raw.end(), more.begin(), more.end());
  ExpectCentredOn(**store, raw);
  // Queries get the same mean as the rows.
  EXPECT_EQ(card().centre_mean.size(), static_cast<size_t>(kDims));
}

TEST(CentreTest, AStoreKeepsItsOptionsAndRefusesRowsMadeOtherwise) {
  testing::TempDir d;
  auto store = OpenStore(d.Join("s.db"), Store::Mode::kCreate);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->EnsureCollection(Info()).ok());
  CollectionInfo other = Info();
  other.embedding = EmbeddingOptionsJson(EmbeddingOptions{});
  const Status st = (*store)->EnsureCollection(other);
  EXPECT_EQ(st.code(), Status::Code::kMismatch) << st.ToString();
  EXPECT_NE(st.message().find("not comparable"), std::string::npos) << st.message();
}

TEST(CentreTest, AStoreFromBeforeOptionsIsUsedAsItWasMade) {
  testing::TempDir d;
  auto store = OpenStore(d.Join("s.db"), Store::Mode::kCreate);
  ASSERT_TRUE(store.ok());
  CollectionInfo legacy = Info();
  legacy.embedding = "";  // what a store made before embedding options reads as
  ASSERT_TRUE((*store)->EnsureCollection(legacy).ok());
  ModelCard card = CentredCard();
  card.embedding.flip_average = true;
  auto applied = CardWithStoreOptions(card, **(*store)->GetCollection());
  ASSERT_TRUE(applied.ok());
  EXPECT_FALSE(applied->embedding.flip_average);
  EXPECT_FALSE(applied->embedding.centre);
  EXPECT_EQ(applied->embedding.power, 1);
}

}  // namespace
}  // namespace nearlabel
