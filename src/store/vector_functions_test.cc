#include <cmath>
#include <cstring>
#include <random>

#include <gtest/gtest.h>

#include "nearlabel/store.h"
#include "nearlabel/vector.h"
#include "test_util.h"

namespace nearlabel {
namespace {

TEST(VectorTest, TextRoundTrip) {
  auto v = ParseVectorText(" [1, 2.5 ,-3e-2] ");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->size(), 3u);
  EXPECT_FLOAT_EQ((*v)[2], -0.03f);
  auto again = ParseVectorText(FormatVector(v->data(), v->size()));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *v);
  for (const char* bad : {"", "[]", "[1,", "[1 2]", "1,2", "[1,nan]", "[1e99]", "[1] x", "[,]"}) {
    EXPECT_FALSE(ParseVectorText(bad).ok()) << bad;
  }
}

TEST(VectorTest, DistancesMatchNaiveReferences) {
  std::mt19937 rng(1);
  std::normal_distribution<float> g;
  std::vector<float> a(37), b(37);
  for (auto& x : a) x = g(rng);
  for (auto& x : b) x = g(rng);
  double dot = 0, na = 0, nb = 0, l2 = 0, l1 = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
    l2 += (a[i] - b[i]) * (a[i] - b[i]);
    l1 += std::fabs(a[i] - b[i]);
  }
  EXPECT_NEAR(VectorDistance(a.data(), b.data(), 37, Metric::kCosine), 1 - dot / std::sqrt(na * nb),
              1e-5);
  EXPECT_NEAR(VectorDistance(a.data(), b.data(), 37, Metric::kEuclidean), std::sqrt(l2), 1e-4);
  EXPECT_NEAR(VectorDistance(a.data(), b.data(), 37, Metric::kEuclideanSquared), l2, 1e-3);
  EXPECT_NEAR(VectorDistance(a.data(), b.data(), 37, Metric::kDot), -dot, 1e-4);
  EXPECT_NEAR(VectorDistance(a.data(), b.data(), 37, Metric::kManhattan), l1, 1e-4);
  std::vector<float> zero(37, 0.f);
  EXPECT_TRUE(std::isnan(VectorDistance(a.data(), zero.data(), 37, Metric::kCosine)));
}

class SqlFunctionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = OpenSqliteStore(dir_.Join("s.db"), Store::Mode::kCreate);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
  }
  SqlValue One(const std::string& sql) {
    auto r = store_->Execute("SELECT " + sql);
    EXPECT_TRUE(r.ok()) << sql << ": " << r.status().ToString();
    return r.ok() ? r->back().rows[0][0] : SqlValue();
  }
  std::string Error(const std::string& sql) {
    auto r = store_->Execute("SELECT " + sql);
    EXPECT_FALSE(r.ok()) << sql;
    return r.ok() ? "" : r.status().message();
  }
  testing::TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(SqlFunctionsTest, Functions) {
  EXPECT_NEAR(std::get<double>(One("vector_distance('[1,0]', '[0,1]')")), 1.0, 1e-9);
  EXPECT_NEAR(
      std::get<double>(One("vector_distance(to_vector('[1,2]'), to_vector('[2,4]'), 'COSINE')")), 0,
      1e-9);
  EXPECT_NEAR(std::get<double>(One("vector_distance('[1,2]', '[4,6]', 'EUCLIDEAN')")), 5, 1e-9);
  EXPECT_NEAR(std::get<double>(One("vector_distance('[1,2]', '[4,6]', 'euclidean_squared')")), 25,
              1e-9);
  EXPECT_NEAR(std::get<double>(One("vector_distance('[1,2]', '[4,6]', 'DOT')")), -16, 1e-9);
  EXPECT_NEAR(std::get<double>(One("vector_distance('[1,2]', '[4,6]', 'MANHATTAN')")), 7, 1e-9);
  EXPECT_EQ(std::get<std::string>(One("from_vector(to_vector('[1.5, -2]'))")), "[1.5,-2]");
  EXPECT_EQ(std::get<int64_t>(One("vector_dims(to_vector('[1,2,3]'))")), 3);
  EXPECT_NEAR(std::get<double>(One("vector_norm('[3,4]')")), 5, 1e-9);
  EXPECT_TRUE(std::holds_alternative<std::monostate>(One("vector_distance(NULL, '[1]')")));
  EXPECT_TRUE(std::holds_alternative<std::monostate>(One("vector_distance('[0,0]', '[1,1]')")));
  EXPECT_EQ(std::get<std::string>(
                One("field('{\"annotations\":[{\"attributes\":{\"part\":\"p\"}}]}', 'part')")),
            "p");
}

TEST_F(SqlFunctionsTest, BadInputIsAnSqlError) {
  EXPECT_NE(Error("vector_distance('[1,2]', '[1,2,3]')").find("dimension mismatch (2 vs 3)"),
            std::string::npos);
  EXPECT_NE(Error("to_vector('[1,')").find("to_vector"), std::string::npos);
  EXPECT_NE(Error("vector_dims(x'010203')").find("not a non-empty array of float32"),
            std::string::npos);
  EXPECT_NE(Error("vector_distance('[1]', '[2]', 'HAMMINGX')").find("unknown distance metric"),
            std::string::npos);
  EXPECT_NE(Error("vector_norm(42)").find("expected a vector"), std::string::npos);
  // Found by fuzz/vector_text_fuzzer: text with a NUL inside was read up to the NUL only.
  EXPECT_NE(Error("vector_dims(CAST(x'5b325d00' || '  26' AS TEXT))").find("after the closing"),
            std::string::npos);
}

// The peers' rules (pgvector, sqlite-vec): no NaN or infinity in a vector, subnormals are
// numbers, cosine distance never below 0, a bad metric is an error whatever the vectors.
TEST_F(SqlFunctionsTest, NonFiniteBlobsAreRefusedAndSubnormalsRoundTrip) {
  for (const char* nan_or_inf : {"vector_norm(X'0000C07F0000803F')", "from_vector(X'0000807F')",
                                 "vector_distance(X'0000C07F', '[1]')"}) {
    const std::string e = Error(nan_or_inf);
    EXPECT_TRUE(e.find("NaN") != std::string::npos || e.find("infinite") != std::string::npos)
        << nan_or_inf << ": " << e;
  }
  EXPECT_EQ(std::get<std::string>(One("from_vector(X'01000000')")), "[1.40129846e-45]");
  EXPECT_EQ(std::get<int64_t>(One("to_vector(from_vector(X'01000000')) = X'01000000'")), 1);
  EXPECT_NE(Error("to_vector('[1e-50]')").find("not a finite float32"), std::string::npos);
  EXPECT_NE(Error("to_vector('[1e39]')").find("not a finite float32"), std::string::npos);
}

TEST_F(SqlFunctionsTest, CosineIsClampedAndTheMetricIsCheckedFirst) {
  std::mt19937 rng(3);
  std::normal_distribution<float> g;
  for (int i = 0; i < 200; ++i) {
    std::vector<float> v(7);
    for (auto& x : v) x = g(rng);
    const double d = VectorDistance(v.data(), v.data(), v.size(), Metric::kCosine);
    EXPECT_GE(d, 0.0);
    EXPECT_LT(d, 1e-6);
  }
  EXPECT_NE(Error("vector_distance(NULL, '[1]', 'BOGUS')").find("unknown distance metric"),
            std::string::npos);
  EXPECT_NE(Error("vector_distance('[1]', '[1]', CAST(X'434F53494E450078' AS TEXT))")
                .find("unknown distance metric"),
            std::string::npos);
  EXPECT_NE(Error("vector_distance('[1]', '[1]', 7)").find("must be text"), std::string::npos);
}

TEST(EmbeddingProblemTest, FlagsNonFiniteAndNonUnitVectors) {
  std::vector<float> unit = {0.6f, 0.8f, 0.f};
  EXPECT_EQ(EmbeddingProblem(unit.data(), 3), "");
  std::vector<float> zero(3, 0.f);
  EXPECT_EQ(EmbeddingProblem(zero.data(), 3), "");
  std::vector<float> flipped = unit;
  uint32_t bits;
  std::memcpy(&bits, &flipped[0], 4);
  bits ^= 1u << 30;  // one exponent bit: 0.6 becomes ~2e38
  std::memcpy(&flipped[0], &bits, 4);
  EXPECT_NE(EmbeddingProblem(flipped.data(), 3).find("length"), std::string::npos);
  std::vector<float> nan = {std::nanf(""), 0.f, 1.f};
  EXPECT_NE(EmbeddingProblem(nan.data(), 3).find("element 0 is NaN"), std::string::npos);
}

}  // namespace
}  // namespace nearlabel
