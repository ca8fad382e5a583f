// The audit (label issues, duplicates, outliers, leakage) and confidence calibration on
// vectors whose truth the test knows.
#include <cmath>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "nearlabel/audit.h"
#include "nearlabel/classify.h"

namespace nearlabel {
namespace {

constexpr int kDims = 16;

// `per_class` rows around each of `classes` random centres (spread `noise`), labelled by
// their centre; row i's label is labels[i].
VectorTable Clusters(int classes, int per_class, float noise, uint32_t seed,
                     std::vector<std::string>* labels) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0, 1);
  std::vector<std::vector<float>> centres(classes, std::vector<float>(kDims));
  for (auto& c : centres) {
    for (float& x : c) x = g(rng);
  }
  VectorTable t;
  t.dims = kDims;
  for (int c = 0; c < classes; ++c) {
    for (int i = 0; i < per_class; ++i) {
      std::vector<float> v(kDims);
      double n = 0;
      for (int k = 0; k < kDims; ++k) {
        v[k] = centres[c][k] + noise * g(rng);
        n += v[k] * v[k];
      }
      for (float& x : v) x = static_cast<float>(x / std::sqrt(n));
      t.ids.push_back(static_cast<int64_t>(t.ids.size()) + 1);
      t.sources.push_back("/d/" + std::to_string(t.ids.back()));
      labels->push_back("c" + std::to_string(c));
      t.metadata.push_back("{\"label\":\"" + labels->back() + "\"}");
      t.vectors.insert(t.vectors.end(), v.begin(), v.end());
    }
  }
  return t;
}

void Relabel(VectorTable* t, size_t row, const std::string& label) {
  t->metadata[row] = "{\"label\":\"" + label + "\"}";
}

TEST(AuditTest, FlippedLabelsComeFirst) {
  std::vector<std::string> labels;
  VectorTable t = Clusters(4, 50, 0.4f, 1, &labels);
  const std::set<size_t> flipped = {3, 60, 111, 170};
  for (size_t r : flipped) Relabel(&t, r, labels[r] == "c0" ? "c1" : "c0");
  AuditOptions o;
  o.label_field = "label";
  auto rep = AuditTable(t, o);
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  ASSERT_GE(rep->label_issues.size(), flipped.size());
  for (size_t i = 0; i < flipped.size(); ++i) {
    EXPECT_TRUE(flipped.count(rep->label_issues[i].row)) << "finding " << i;
    EXPECT_TRUE(rep->label_issues[i].confident);
    EXPECT_EQ(rep->label_issues[i].suggested, labels[rep->label_issues[i].row]);
  }
  // Without the probe, the vote alone still ranks them first on data this clean.
  o.probe_weight = 0;
  auto vote = AuditTable(t, o);
  ASSERT_TRUE(vote.ok());
  EXPECT_FALSE(vote->probe);
  EXPECT_TRUE(flipped.count(vote->label_issues[0].row));
}

TEST(AuditTest, NearCopiesGroupAndFarRowsAreOutliers) {
  std::vector<std::string> labels;
  VectorTable t = Clusters(3, 30, 0.5f, 2, &labels);
  // Row 5 copied twice with a tiny change (one labelled differently), and one far row.
  for (int copy = 0; copy < 2; ++copy) {
    std::vector<float> v(t.row(5), t.row(5) + kDims);
    v[copy] += 0.002f;
    double n = 0;
    for (float x : v) n += x * x;
    for (float& x : v) x = static_cast<float>(x / std::sqrt(n));
    t.ids.push_back(1000 + copy);
    t.sources.push_back("copy");
    t.metadata.push_back(copy ? "{\"label\":\"c2\"}" : t.metadata[5]);
    t.vectors.insert(t.vectors.end(), v.begin(), v.end());
  }
  std::vector<float> far(kDims, 0);
  far[0] = -1;
  t.ids.push_back(2000);
  t.sources.push_back("far");
  t.metadata.push_back("{\"label\":\"c0\"}");
  t.vectors.insert(t.vectors.end(), far.begin(), far.end());
  AuditOptions o;
  o.label_field = "label";
  VectorTable audited;
  auto rep = AuditTable(t, o, &audited);
  ASSERT_TRUE(rep.ok());
  ASSERT_FALSE(rep->duplicates.empty());
  const DuplicateGroup& g = rep->duplicates.front();
  EXPECT_EQ(g.rows, (std::vector<size_t>{5, 90, 91}));
  EXPECT_TRUE(g.mixed_labels);
  EXPECT_LE(g.max_distance, o.duplicate_distance);
  ASSERT_FALSE(rep->outliers.empty());
  EXPECT_EQ(audited.ids[rep->outliers.front().row], 2000);
}

TEST(AuditTest, LeakageCountsIdenticalAndNearQueriesAndAccuracyWithoutThem) {
  std::vector<std::string> labels;
  VectorTable store = Clusters(3, 30, 0.5f, 3, &labels);
  std::vector<std::string> store_sha;
  for (size_t i = 0; i < store.size(); ++i) store_sha.push_back("s" + std::to_string(i));
  VectorTable q;
  q.dims = kDims;
  ImageKeys store_keys, q_keys;
  store_keys.sha256 = store_sha;
  store_keys.phash.assign(store.size(), std::nullopt);
  store_keys.phash[70] = 0xF0F0F0F0ull;
  std::vector<std::string> q_sha;
  auto add = [&](const float* v, const std::string& sha, const std::string& meta) {
    q.ids.push_back(-static_cast<int64_t>(q.ids.size()) - 1);
    q.sources.push_back(sha);
    q.metadata.push_back(meta);
    q.vectors.insert(q.vectors.end(), v, v + kDims);
    q_sha.push_back(sha);
    q_keys.sha256.push_back(sha);
    q_keys.phash.push_back(std::nullopt);
  };
  add(store.row(0), "s0", store.metadata[0]);    // byte-identical
  add(store.row(40), "x1", store.metadata[40]);  // same features, other bytes: a near copy
  // Five fresh images: store rows moved well away (not copies), keeping their label.
  std::mt19937 rng(9);
  std::normal_distribution<float> g(0, 0.3f);
  for (size_t i = 1; i < 6; ++i) {
    std::vector<float> v(store.row(i * 15), store.row(i * 15) + kDims);
    double n = 0;
    for (float& x : v) {
      x += g(rng);
      n += x * x;
    }
    for (float& x : v) x = static_cast<float>(x / std::sqrt(n));
    add(v.data(), "f" + std::to_string(i), store.metadata[i * 15]);
  }
  q_keys.phash[2] = 0xF0F0F0F1ull;  // a fresh image whose hash is one bit from row 70's
  AuditOptions o;
  o.label_field = "label";
  o.duplicate_distance = 1e-4;
  const LeakageReport r = AuditLeakage(store, store_keys, q, q_keys, o);
  EXPECT_EQ(r.queries, 7u);
  EXPECT_EQ(r.identical, 1u);
  EXPECT_EQ(r.near, 2u);
  ASSERT_EQ(r.leaked.size(), 3u);
  EXPECT_TRUE(r.leaked[0].identical);
  EXPECT_EQ(r.leaked[0].row, 0u);
  EXPECT_EQ(r.leaked[1].row, 40u);
  EXPECT_EQ(r.leaked[2].row, 70u);
  EXPECT_EQ(r.leaked[2].hash_distance, 1);
  EXPECT_GT(r.leaked[2].distance, 0);
  EXPECT_EQ(r.scored, 7u);
  EXPECT_EQ(r.scored_without_leaked, 4u);
  o.hash_bits = -1;  // hashes off: the fresh image is not a copy
  EXPECT_EQ(AuditLeakage(store, store_keys, q, q_keys, o).leaked.size(), 2u);
}

TEST(AuditTest, RefusesWhatItCannotAudit) {
  std::vector<std::string> labels;
  VectorTable t = Clusters(2, 5, 0.5f, 4, &labels);
  AuditOptions o;
  EXPECT_EQ(AuditTable(t, o).status().code(), Status::Code::kInvalidArgument);  // no field
  o.label_field = "nothing";
  EXPECT_EQ(AuditTable(t, o).status().code(), Status::Code::kInvalidArgument);  // no rows
}

TEST(CalibrationTest, ReliabilityOfPerfectAndOverconfidentScores) {
  // 10 rows at confidence 0.75, 3 of 4 right per 4: calibrated.
  std::vector<double> c(8, 0.75);
  std::vector<bool> ok = {true, true, true, false, true, true, true, false};
  EXPECT_NEAR(MeasureReliability(c, ok).ece, 0, 1e-12);
  // Confidence 1 but half right: ECE 0.5, in the top bin.
  const Reliability r = MeasureReliability(std::vector<double>(4, 1.0), {true, false, true, false});
  EXPECT_NEAR(r.ece, 0.5, 1e-12);
  EXPECT_EQ(r.bins.back().n, 4u);
}

TEST(CalibrationTest, FittedConfidenceIsBetterCalibratedOnOverlappingClasses) {
  std::vector<std::string> labels;
  VectorTable t = Clusters(3, 120, 1.2f, 5, &labels);  // heavily overlapping classes
  EvalOptions o;
  o.label_field = "label";
  o.k = 5;
  auto rep = LeaveOneOut(t, o);
  ASSERT_TRUE(rep.ok());
  ASSERT_TRUE(rep->calibration.fitted());
  ASSERT_EQ(rep->calibrated_confidence.size(), rep->n);
  EXPECT_LT(rep->calibrated_reliability.ece, rep->vote_reliability.ece);
  // Probabilities over the classes sum to one and keep the vote's order.
  Prediction vote;
  vote.scores = {{"c0", 0.6}, {"c1", 0.4}};
  const double p0 = rep->calibration.Probability(vote, "c0");
  const double p1 = rep->calibration.Probability(vote, "c1");
  const double p2 = rep->calibration.Probability(vote, "c2");
  EXPECT_NEAR(p0 + p1 + p2, 1, 1e-9);
  EXPECT_GT(p0, p1);
  EXPECT_GE(p1, p2);
  auto fit = FitCalibration(t, "label", 5, Vote::kMajority);
  ASSERT_TRUE(fit.ok());
  EXPECT_GT(fit->temperature, 0);
  EXPECT_EQ(FitCalibration(t, "nothing", 5, Vote::kMajority).status().code(),
            Status::Code::kInvalidArgument);
}

}  // namespace
}  // namespace nearlabel
