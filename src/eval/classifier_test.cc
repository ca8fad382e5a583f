#include <gtest/gtest.h>

#include "nearlabel/classify.h"

namespace nearlabel {
namespace {

TEST(VoteTest, MajorityDistanceSoftmax) {
  std::vector<std::string> labels{"a", "b", "b", ""};
  std::vector<Neighbor> nbs{{0, 0.01f}, {1, 0.30f}, {2, 0.31f}, {3, 0.0f}};
  Prediction m = VoteLabel(nbs, labels, Vote::kMajority);
  EXPECT_EQ(m.label, "b");
  EXPECT_NEAR(m.confidence, 2.0 / 3, 1e-9);
  Prediction d = VoteLabel(nbs, labels, Vote::kDistance);
  EXPECT_EQ(d.label, "a");  // 1/0.01 outweighs 1/0.30 + 1/0.31
  Prediction s = VoteLabel(nbs, labels, Vote::kSoftmax);
  EXPECT_EQ(s.label, "a");
  double total = 0;
  for (auto& [l, w] : s.scores) total += w;
  EXPECT_NEAR(total, 1.0, 1e-9);
}

TEST(VoteTest, TieGoesToNearest) {
  std::vector<std::string> labels{"x", "y"};
  Prediction p = VoteLabel({{1, 0.1f}, {0, 0.2f}}, labels, Vote::kMajority);
  EXPECT_EQ(p.label, "y");
  EXPECT_EQ(VoteLabel({}, labels, Vote::kMajority).label, "");
}

TEST(VoteTest, ParseNames) {
  EXPECT_EQ(*ParseVote("softmax"), Vote::kSoftmax);
  EXPECT_FALSE(ParseVote("plurality").ok());
}

}  // namespace
}  // namespace nearlabel
