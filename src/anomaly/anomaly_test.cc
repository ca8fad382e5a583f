#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "nearlabel/anomaly.h"
#include "nearlabel/classify.h"

namespace nearlabel {
namespace {

std::vector<float> RandomRows(size_t n, int dims, uint32_t seed, float spread = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.f, spread);
  std::vector<float> v(n * dims);
  for (float& x : v) x = g(rng);
  return v;
}

float L2(const float* a, const float* b, int dims) {
  double s = 0;
  for (int d = 0; d < dims; ++d) s += (a[d] - b[d]) * (a[d] - b[d]);
  return static_cast<float>(std::sqrt(s));
}

TEST(NearestPatches, MatchesBruteForceAndHonoursGroups) {
  const int dims = 19;  // odd: no lucky alignment
  const size_t nb = 5000, nq = 37;
  const auto bank = RandomRows(nb, dims, 1), queries = RandomRows(nq, dims, 2);
  std::vector<int32_t> group(nb);
  for (size_t i = 0; i < nb; ++i) group[i] = static_cast<int32_t>(i % 7);
  std::vector<float> d;
  std::vector<uint32_t> idx;
  NearestPatches(bank.data(), nb, queries.data(), nq, dims, &d, &idx, group.data(), 3);
  for (size_t q = 0; q < nq; ++q) {
    float best = INFINITY;
    size_t best_i = nb;
    for (size_t b = 0; b < nb; ++b) {
      if (group[b] == 3) continue;
      const float dist = L2(queries.data() + q * dims, bank.data() + b * dims, dims);
      if (dist < best) best = dist, best_i = b;
    }
    EXPECT_EQ(idx[q], best_i);
    EXPECT_NEAR(d[q], best, 1e-3f);
    EXPECT_NE(group[idx[q]], 3);
  }
  // Every row excluded: infinity and index nb.
  std::vector<int32_t> one(nb, 0);
  NearestPatches(bank.data(), nb, queries.data(), 2, dims, &d, &idx, one.data(), 0);
  EXPECT_TRUE(std::isinf(d[0]));
  EXPECT_EQ(idx[0], nb);
}

TEST(GreedyCoreset, CoversTheDataBetterThanARandomSubset) {
  // 20 tight clusters: a k-centre coreset of 20 must hit every cluster; a random one rarely.
  const int dims = 16;
  const size_t per = 200, clusters = 20;
  std::vector<float> rows;
  const auto centres = RandomRows(clusters, dims, 3, 10.f);
  const auto noise = RandomRows(per * clusters, dims, 4, 0.05f);
  for (size_t c = 0; c < clusters; ++c) {
    for (size_t i = 0; i < per; ++i) {
      for (int d = 0; d < dims; ++d) {
        rows.push_back(centres[c * dims + d] + noise[(c * per + i) * dims + d]);
      }
    }
  }
  const auto chosen = GreedyCoreset(rows.data(), per * clusters, dims, clusters, 5);
  ASSERT_EQ(chosen.size(), clusters);
  std::vector<int> hit(clusters, 0);
  for (size_t i : chosen) hit[i / per]++;
  for (size_t c = 0; c < clusters; ++c) EXPECT_EQ(hit[c], 1) << "cluster " << c;
  EXPECT_TRUE(std::is_sorted(chosen.begin(), chosen.end()));
  EXPECT_EQ(GreedyCoreset(rows.data(), 10, dims, 50).size(), 10u);  // m >= n: all rows
}

TEST(Auroc, RankStatistic) {
  EXPECT_DOUBLE_EQ(Auroc({1, 2, 3}, {4, 5}), 1.0);
  EXPECT_DOUBLE_EQ(Auroc({4, 5}, {1, 2, 3}), 0.0);
  EXPECT_DOUBLE_EQ(Auroc({1, 2}, {1, 2}), 0.5);  // ties count half
  EXPECT_DOUBLE_EQ(Auroc({1, 3}, {2, 4}), 0.75);
  EXPECT_DOUBLE_EQ(Auroc({}, {1}), 0.5);
}

TEST(Threshold, QuantileOfNormalScores) {
  std::vector<float> s;
  for (int i = 0; i <= 100; ++i) s.push_back(static_cast<float>(i));
  EXPECT_FLOAT_EQ(ThresholdForFalseAlarms(s, 0.05), 95.f);
  EXPECT_FLOAT_EQ(ThresholdForFalseAlarms(s, 0.0), 100.f);
  EXPECT_FLOAT_EQ(ThresholdForFalseAlarms({}, 0.1), 0.f);
}

TEST(PatchProjector, LocalAverageAndProjectionKeepDistances) {
  const int grid = 4, raw = 256;
  PatchFeatureOptions opt;
  opt.local_average = false;
  opt.projected_dims = 128;
  const auto p = PatchProjector::Create(raw, grid, opt);
  const auto maps = RandomRows(grid * grid, raw, 6);
  std::vector<float> out(p.patches() * p.dims());
  p.Apply(maps.data(), out.data());
  // Johnson-Lindenstrauss: projected distances stay within ~25% at 128 dims.
  for (int a = 0; a < 5; ++a) {
    const float before = L2(maps.data() + a * raw, maps.data() + (a + 1) * raw, raw);
    const float after = L2(out.data() + a * 128, out.data() + (a + 1) * 128, 128);
    EXPECT_NEAR(after / before, 1.0f, 0.25f);
  }
  // 3x3 average: a constant map stays constant.
  opt.local_average = true;
  opt.projected_dims = 0;
  const auto q = PatchProjector::Create(3, grid, opt);
  std::vector<float> flat(grid * grid * 3, 2.f), got(grid * grid * 3);
  q.Apply(flat.data(), got.data());
  for (float v : got) EXPECT_FLOAT_EQ(v, 2.f);
}

TEST(AnomalyModel, RoundTripsAndRejectsDamage) {
  AnomalyModel m;
  m.model = "mobilenetv2-12-int8";
  m.model_sha256 = "abc";
  m.normal_where = "field(metadata,'label')='good'";
  PatchFeatureOptions opt;
  opt.projected_dims = 8;
  m.projector = PatchProjector::Create(16, 3, opt);
  m.bank = RandomRows(40, 8, 7);
  m.threshold = 1.5f;
  m.bank_items = {1, 2, 3};
  m.calibration_items = {4};
  m.test_items = {5};
  m.calibration_scores = {1.25f};
  const std::string bytes = m.Serialize().value();
  auto back = AnomalyModel::Parse(bytes);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->bank, m.bank);
  EXPECT_EQ(back->projector.matrix(), m.projector.matrix());
  EXPECT_EQ(back->test_items, m.test_items);
  EXPECT_FLOAT_EQ(back->threshold, 1.5f);
  // The same raw map scores the same through the copy.
  const auto raw = RandomRows(9, 16, 8);
  EXPECT_FLOAT_EQ(ScoreImage(*back, raw.data()).score, ScoreImage(m, raw.data()).score);
  EXPECT_EQ(AnomalyModel::Parse(bytes.substr(0, bytes.size() - 3)).status().code(),
            Status::Code::kCorruption);
  EXPECT_EQ(AnomalyModel::Parse("not a model").status().code(), Status::Code::kCorruption);
  EXPECT_EQ(AnomalyModel::Parse(bytes + "xxxx").status().code(), Status::Code::kCorruption);
}

TEST(PatchBankIndex, FindsTheExactNearestPatchAndTravelsWithTheModel) {
  // 2000 bank rows, 300 queries: with ef 64 the walk finds the scan's nearest row for
  // (nearly) every query, and never one nearer than the exact nearest.
  const int dims = 16;
  AnomalyModel m;
  PatchFeatureOptions opt;
  opt.projected_dims = 0;
  opt.local_average = false;
  m.projector = PatchProjector::Create(dims, 1, opt);
  m.bank = RandomRows(2000, dims, 31);
  const auto queries = RandomRows(300, dims, 32);
  std::vector<float> exact, walk;
  NearestPatches(m.bank.data(), 2000, queries.data(), 300, dims, &exact, nullptr);
  PatchBankIndexParams p;
  p.ef = 64;
  auto index = PatchBankIndex::Build(m.bank.data(), 2000, dims, p);
  index->Nearest(queries.data(), 300, &walk);
  int same = 0;
  for (size_t q = 0; q < 300; ++q) {
    EXPECT_GE(walk[q], exact[q] * (1 - 1e-4f)) << q;
    same += std::fabs(walk[q] - exact[q]) <= 1e-4f * exact[q];
  }
  EXPECT_GE(same, 297);
  // Through Serialize and Parse the model keeps its graph and scores the same.
  m.bank_index = std::move(index);
  m.bank_index_ef = p.ef;
  const std::string bytes = m.Serialize().value();
  auto back = AnomalyModel::Parse(bytes);
  ASSERT_TRUE(back.ok()) << back.status().message();
  ASSERT_NE(back->bank_index, nullptr);
  for (size_t q = 0; q < 300; q += 37) {
    EXPECT_FLOAT_EQ(ScoreImage(*back, queries.data() + q * dims).score,
                    ScoreImage(m, queries.data() + q * dims).score);
  }
  // A graph cut short or damaged, or one of another bank size, is refused.
  std::string damaged = bytes;
  damaged[damaged.size() - 50] ^= 0x5a;
  EXPECT_EQ(AnomalyModel::Parse(damaged).status().code(), Status::Code::kCorruption);
  EXPECT_EQ(AnomalyModel::Parse(bytes.substr(0, bytes.size() - 100)).status().code(),
            Status::Code::kCorruption);
  EXPECT_EQ(
      PatchBankIndex::Parse(m.bank_index->Serialize().value(), dims, 1999, 64).status().code(),
      Status::Code::kCorruption);
}

TEST(AnomalyScore, AnOddPatchScoresHighAndLightsTheHeatMap) {
  // Normal images: smooth maps near one pattern; the query has one patch far from it.
  const int grid = 6, raw = 12;
  PatchFeatureOptions opt;
  opt.projected_dims = 0;
  opt.local_average = false;
  AnomalyModel m;
  m.projector = PatchProjector::Create(raw, grid, opt);
  for (int img = 0; img < 5; ++img) {
    auto rows = RandomRows(grid * grid, raw, 10 + img, 0.1f);
    m.bank.insert(m.bank.end(), rows.begin(), rows.end());
  }
  auto query = RandomRows(grid * grid, raw, 20, 0.1f);
  const int odd = 2 * grid + 4;
  for (int d = 0; d < raw; ++d) query[odd * raw + d] += 3.f;
  const AnomalyScore s = ScoreImage(m, query.data());
  const auto worst = std::max_element(s.patch_scores.begin(), s.patch_scores.end());
  EXPECT_EQ(worst - s.patch_scores.begin(), odd);
  EXPECT_FLOAT_EQ(s.score, *worst);
  cv::Mat image(120, 120, CV_8UC3, cv::Scalar(128, 128, 128));
  cv::Mat heat = HeatmapOverlay(image, s.patch_scores, grid, s.score / 2, s.score);
  ASSERT_EQ(heat.size(), image.size());
  // The odd patch's cell (x 80..100, y 40..60) is red-hot; a far corner is not.
  const cv::Vec3b hot = heat.at<cv::Vec3b>(50, 90), cold = heat.at<cv::Vec3b>(5, 5);
  EXPECT_GT(hot[2], cold[2] + 40);
}

TEST(PatchLeaveOneGroupOut, VotesWithTheMostAnomalousPatches) {
  // Normal rows: patches near 0. Defect class A: one patch at +e0, class B: one at +e1.
  const int dims = 8;
  const size_t per = 9;
  PatchEvalInput in;
  in.dims = dims;
  in.patches_per_row = per;
  auto row = [&](int defect_axis, uint32_t seed) {
    auto p = RandomRows(per, dims, seed, 0.05f);
    if (defect_axis >= 0) p[4 * dims + defect_axis] += 2.f;
    return p;
  };
  for (int i = 0; i < 12; ++i) {
    in.labels.push_back("good");
    in.groups.push_back("g" + std::to_string(i));
    in.patches.push_back(row(-1, 100 + i));
  }
  for (int i = 0; i < 4; ++i) {
    for (int axis = 0; axis < 2; ++axis) {
      in.labels.push_back(axis ? "B" : "A");
      in.groups.push_back("d" + std::to_string(i));  // A and B of one group: never each other's
      in.patches.push_back(row(axis, 200 + 2 * i + axis));
    }
  }
  PatchEvalOptions opt;
  opt.normal_label = "good";
  opt.votes = 1;
  opt.coreset_fraction = 1.0;
  auto r = PatchLeaveOneGroupOut(in, opt);
  ASSERT_TRUE(r.ok()) << r.status().message();
  for (size_t i = 0; i < in.labels.size(); ++i) {
    EXPECT_EQ(r->predicted[i], in.labels[i]) << "row " << i;
    EXPECT_NE(in.groups[r->evidence_row[i]], in.groups[i]) << "row " << i;
  }
  opt.normal_label = "missing";
  EXPECT_EQ(PatchLeaveOneGroupOut(in, opt).status().code(), Status::Code::kInvalidArgument);
}

TEST(OpenSet, PerClassThresholdsRejectAFarClass) {
  // Two tight known classes and one far unknown class, on the unit sphere.
  VectorTable t;
  t.dims = 3;
  std::mt19937 rng(9);
  std::normal_distribution<float> g(0.f, 0.03f);
  auto add = [&](float x, float y, float z, const std::string& label, int n) {
    for (int i = 0; i < n; ++i) {
      float v[3] = {x + g(rng), y + g(rng), z + g(rng)};
      const float norm = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
      for (float c : v) t.vectors.push_back(c / norm);
      t.ids.push_back(static_cast<int64_t>(t.ids.size() + 1));
      t.sources.push_back("x");
      t.metadata.push_back("{\"label\":\"" + label + "\"}");
    }
  };
  add(1, 0, 0, "a", 60);
  add(0, 1, 0, "b", 60);
  add(0, 0, 1, "far", 30);
  auto th = CalibrateRejection(t, "label", 0.95);
  ASSERT_TRUE(th.ok());
  EXPECT_EQ(th->per_class.size(), 3u);
  auto rep = EvaluateOpenSet(t, "label", "far", 0.95);
  ASSERT_TRUE(rep.ok()) << rep.status().message();
  EXPECT_EQ(rep->unknown_rows, 30u);
  EXPECT_EQ(rep->unknown_rejected, 30u);
  EXPECT_EQ(rep->known_rows, 60u);
  EXPECT_LE(rep->known_rejected, 12u);
  EXPECT_EQ(rep->known_correct + rep->known_rejected, 60u);
  EXPECT_EQ(EvaluateOpenSet(t, "label", "nope", 0.95).status().code(),
            Status::Code::kInvalidArgument);
  EXPECT_EQ(CalibrateRejection(t, "label", 1.5).status().code(), Status::Code::kInvalidArgument);
}

}  // namespace
}  // namespace nearlabel
