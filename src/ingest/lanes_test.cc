// The ingest pipeline's embedding lanes (Embedder::lanes): every lane runs on its own thread,
// takes images across batch boundaries, and the rows still reach the store whole batch by
// whole batch, in listing order. The embedder here is a test double with three lanes whose
// calls take random times, so that lanes finish out of order; images, decoding and the
// SQLite store are real.
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "common/fs.h"
#include "nearlabel/dataset.h"
#include "nearlabel/image.h"
#include "nearlabel/ingest.h"
#include "nearlabel/store.h"
#include "test_util.h"

namespace nearlabel {
namespace {

constexpr int kDims = 4;
constexpr int kLanes = 3;
constexpr int kLaneBatch = 2;

ModelCard SmallCard() {
  ModelCard c;
  c.name = "lanes-test";
  c.dims = kDims;
  c.preprocess.width = c.preprocess.height = 16;
  c.preprocess.resize = PreprocessSpec::Resize::kDirect;
  return c;
}

// What the double computes for one preprocessed image: its channel sums and a constant,
// normalised (different images give different vectors).
void Features(const float* image, const PreprocessSpec& p, float* out) {
  const size_t plane = static_cast<size_t>(p.width) * p.height;
  double v[kDims] = {0, 0, 0, 1};
  for (int c = 0; c < 3; ++c) {
    for (size_t i = 0; i < plane; ++i) v[c] += image[c * plane + i];
  }
  double n = 0;
  for (double x : v) n += x * x;
  for (int k = 0; k < kDims; ++k) out[k] = static_cast<float>(v[k] / std::sqrt(n));
}

class LaneEmbedder : public Embedder {
 public:
  explicit LaneEmbedder(int fail_at_call = -1) : fail_at_call_(fail_at_call) {}
  const ModelCard& card() const override { return card_; }
  int max_batch() const override { return kLanes * kLaneBatch; }
  std::string backend() const override { return "lanes-test"; }
  Status Embed(const float*, int, float*) override {
    ++embed_calls_;
    return Status::Internal("the pipeline should embed on its lanes");
  }
  int lanes() const override { return kLanes; }
  int lane_batch() const override { return kLaneBatch; }
  Status EmbedOnLane(int lane, const float* input, int count, float* output) override {
    if (lane < 0 || lane >= kLanes || count < 1 || count > kLaneBatch) {
      bad_calls_++;
      return Status::InvalidArgument("bad lane call");
    }
    if (busy_[lane].exchange(true)) overlaps_++;
    {
      std::lock_guard<std::mutex> lock(mu_);
      used_[lane] = true;
      std::this_thread::sleep_for(std::chrono::microseconds(rng_() % 3000));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500 * lane));
    const int call = calls_++;
    busy_[lane] = false;
    if (call == fail_at_call_) return Status::Internal("lane " + std::to_string(lane) + " broke");
    const size_t slot = 3 * static_cast<size_t>(card_.preprocess.width) * card_.preprocess.height;
    for (int i = 0; i < count; ++i)
      Features(input + i * slot, card_.preprocess, output + i * kDims);
    return Status::OK();
  }

  int lanes_used() const { return used_[0] + used_[1] + used_[2]; }
  std::atomic<int> embed_calls_{0}, bad_calls_{0}, overlaps_{0}, calls_{0};

 private:
  const ModelCard card_ = SmallCard();
  const int fail_at_call_;
  std::atomic<bool> busy_[kLanes] = {};
  std::mutex mu_;
  std::mt19937 rng_{7};
  bool used_[kLanes] = {};
};

struct Fixture {
  testing::TempDir dir;
  DatasetListing listing;
  std::unique_ptr<Store> store;
};

// `n` distinct images in two class folders, and a fresh store.
void MakeDataset(int n, Fixture* f) {
  for (int i = 0; i < n; ++i) {
    testing::WriteFile(f->dir.Join("data/" + std::string(i % 2 ? "a" : "b") + "/img" +
                                   std::to_string(100 + i) + ".png"),
                       testing::Encode(testing::SyntheticImage(24, 20, i), ".png"));
  }
  auto listing = ListDataset(f->dir.Join("data"), DatasetLayout::kFolder);
  ASSERT_TRUE(listing.ok()) << listing.status().ToString();
  ASSERT_EQ(listing->items.size(), static_cast<size_t>(n));
  f->listing = *listing;
  auto store = OpenStore(f->dir.Join("s.db"), Store::Mode::kCreate);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  CollectionInfo info;
  info.model = "lanes-test";
  info.model_sha256 = std::string(64, 'a');
  info.dims = kDims;
  ASSERT_TRUE((*store)->EnsureCollection(info).ok());
  f->store = std::move(*store);
}

// The vector the double gives the image at `path`.
std::vector<float> Expected(const std::string& path) {
  auto bytes = ReadFileToString(path);
  EXPECT_TRUE(bytes.ok());
  auto img = DecodeImage(*bytes);
  EXPECT_TRUE(img.ok());
  const PreprocessSpec p = SmallCard().preprocess;
  std::vector<float> tensor(3 * p.width * p.height), v(kDims);
  PreprocessInto(*img, p, tensor.data());
  Features(tensor.data(), p, v.data());
  return v;
}

// The store's rows in id order: they must be the first rows of the listing, each with its
// own image's vector.
void ExpectListingPrefix(Fixture& f, size_t rows) {
  auto table = f.store->LoadVectors("");
  ASSERT_TRUE(table.ok()) << table.status().ToString();
  ASSERT_EQ(table->size(), rows);
  for (size_t i = 0; i < rows; ++i) {
    EXPECT_EQ(table->sources[i], f.listing.items[i].image_path) << "row " << i;
    const std::vector<float> want = Expected(f.listing.items[i].image_path);
    for (int k = 0; k < kDims; ++k) EXPECT_EQ(table->row(i)[k], want[k]) << "row " << i;
  }
}

TEST(IngestLanesTest, EveryLaneEmbedsAndRowsAreStoredInListingOrder) {
  Fixture f;
  MakeDataset(37, &f);
  LaneEmbedder embedder;
  IngestOptions options;
  options.batch_size = 5;  // batches that do not divide into lane batches
  auto rep = Ingest(f.listing, embedder, *f.store, options, {}, nullptr);
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_EQ(rep->inserted, 37u);
  EXPECT_FALSE(rep->interrupted);
  EXPECT_EQ(embedder.lanes_used(), kLanes);
  EXPECT_EQ(embedder.overlaps_.load(), 0) << "two calls ran on one lane at once";
  EXPECT_EQ(embedder.bad_calls_.load(), 0);
  EXPECT_EQ(embedder.embed_calls_.load(), 0);
  ExpectListingPrefix(f, 37);
}

TEST(IngestLanesTest, AnEmbedderErrorFailsTheIngestAndKeepsOnlyWholeBatches) {
  Fixture f;
  MakeDataset(30, &f);
  LaneEmbedder embedder(/*fail_at_call=*/6);
  IngestOptions options;
  options.batch_size = 4;
  auto rep = Ingest(f.listing, embedder, *f.store, options, {}, nullptr);
  ASSERT_FALSE(rep.ok());
  EXPECT_NE(rep.status().message().find("broke"), std::string::npos) << rep.status().ToString();
  auto count = f.store->Count();
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(*count % 4, 0) << "a batch was stored in part";
  EXPECT_LT(*count, 30);
  ExpectListingPrefix(f, static_cast<size_t>(*count));
  // The same command again stores the rest.
  LaneEmbedder healthy;
  auto again = Ingest(f.listing, healthy, *f.store, options, {}, nullptr);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->inserted + static_cast<size_t>(*count), 30u);
  ExpectListingPrefix(f, 30);
}

TEST(IngestLanesTest, AStopFinishesTheOpenBatchesAndAReRunResumes) {
  Fixture f;
  MakeDataset(40, &f);
  LaneEmbedder embedder;
  IngestOptions options;
  options.batch_size = 4;
  std::atomic<bool> stop{false};
  auto rep = Ingest(
      f.listing, embedder, *f.store, options, [&](size_t, size_t) { stop = true; }, &stop);
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_TRUE(rep->interrupted);
  EXPECT_EQ(rep->inserted % 4, 0u);
  EXPECT_LT(rep->inserted, 40u);
  ExpectListingPrefix(f, rep->inserted);
  LaneEmbedder again_embedder;
  auto again = Ingest(f.listing, again_embedder, *f.store, options, {}, nullptr);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->inserted + rep->inserted, 40u);
  EXPECT_EQ(again->already_stored, rep->inserted);
  ExpectListingPrefix(f, 40);
}

TEST(EmbedFilesStreamingLanesTest, AnEmbedderErrorIsItsFilesErrorAndTheRestGoOn) {
  Fixture f;
  MakeDataset(23, &f);
  std::vector<std::string> paths;
  for (const auto& it : f.listing.items) paths.push_back(it.image_path);
  paths.insert(paths.begin() + 5, f.dir.Join("missing.png"));
  LaneEmbedder embedder(/*fail_at_call=*/3);
  std::vector<EmbeddedFile> got;
  auto rep = EmbedFilesStreaming(
      paths, embedder,
      [&](EmbeddedFile& file) {
        got.push_back(file);
        return Status::OK();
      },
      nullptr);
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  ASSERT_EQ(got.size(), paths.size());
  size_t broke = 0;
  for (size_t i = 0; i < paths.size(); ++i) {
    EXPECT_EQ(got[i].path, paths[i]) << "file " << i << " out of order";
    if (i == 5) {
      EXPECT_FALSE(got[i].status.ok());
    } else if (!got[i].status.ok()) {
      EXPECT_NE(got[i].status.message().find("broke"), std::string::npos);
      ++broke;
    } else {
      EXPECT_EQ(got[i].embedding, Expected(paths[i])) << "file " << i;
    }
  }
  EXPECT_GE(broke, 1u);
  EXPECT_LE(broke, static_cast<size_t>(kLaneBatch));
  EXPECT_EQ(embedder.overlaps_.load(), 0);
}

}  // namespace
}  // namespace nearlabel
