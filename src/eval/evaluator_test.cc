#include <cmath>

#include <gtest/gtest.h>

#include "nearlabel/classify.h"

namespace nearlabel {
namespace {

// Rows: 2-d unit vectors at given angles with label/part/group metadata.
VectorTable Table(
    const std::vector<std::tuple<float, std::string, std::string, std::string>>& rows) {
  VectorTable t;
  t.dims = 2;
  int64_t id = 1;
  for (const auto& [angle, label, part, group] : rows) {
    t.ids.push_back(id++);
    t.sources.push_back("img" + std::to_string(id));
    t.metadata.push_back(R"({"label":")" + label + R"(","part":")" + part + R"(","g":")" + group +
                         "\"}");
    t.vectors.push_back(std::cos(angle));
    t.vectors.push_back(std::sin(angle));
  }
  return t;
}

TEST(EvaluatorTest, PlainLeaveOneOutCountsAndConfusion) {
  VectorTable t = Table({{0.00f, "ok", "p1", "g1"},
                         {0.01f, "ok", "p1", "g1"},
                         {1.00f, "bad", "p1", "g2"},
                         {1.02f, "bad", "p1", "g2"},
                         {0.015f, "bad", "p1", "g3"}});
  EvalOptions o;
  o.label_field = "label";
  auto r = LeaveOneOut(t, o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->n, 5u);
  // Rows 2 (ok at 0.01) and 5 (bad at 0.015) are each other's nearest: both wrong.
  EXPECT_EQ(r->correct, 3u);
  EXPECT_EQ(r->classes, (std::vector<std::string>{"bad", "ok"}));
  size_t total = 0;
  for (auto& row : r->confusion)
    for (size_t v : row) total += v;
  EXPECT_EQ(total, r->n);
  EXPECT_EQ(r->mismatches.size(), 2u);
}

TEST(EvaluatorTest, WithinAndGroupRules) {
  VectorTable t = Table({{0.00f, "ok", "p1", "g1"},
                         {0.01f, "bad", "p2", "g1"},
                         {0.50f, "ok", "p1", "g2"},
                         {0.02f, "ok", "p1", "g1"},
                         {0.90f, "bad", "p2", "g3"},
                         {3.0f, "ok", "p3", "g9"}});
  EvalOptions o;
  o.label_field = "label";
  o.within_field = "part";
  auto r = LeaveOneOut(t, o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->no_candidate, 1u);  // p3 has one row
  EXPECT_EQ(r->n, 5u);
  EXPECT_EQ(r->correct, 5u);  // within parts the labels agree
  o.group_field = "g";
  r = LeaveOneOut(t, o);
  ASSERT_TRUE(r.ok());
  // Row 1 (g1, p1) may not use row 4 (g1): its neighbour is row 3 (g2, ok) -> still right.
  EXPECT_EQ(r->correct, 5u);
  for (const auto& m : r->mismatches) EXPECT_NE(m.neighbors[0].row, m.row);
}

TEST(EvaluatorTest, RowsWithoutLabelAreSkipped) {
  VectorTable t = Table({{0.0f, "", "p", "g"}, {0.1f, "a", "p", "g"}, {0.2f, "a", "p", "g"}});
  EvalOptions o;
  o.label_field = "label";
  auto r = LeaveOneOut(t, o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->no_label, 1u);
  EXPECT_EQ(r->n, 2u);
  o.label_field = "";
  EXPECT_FALSE(LeaveOneOut(t, o).ok());
}

}  // namespace
}  // namespace nearlabel
