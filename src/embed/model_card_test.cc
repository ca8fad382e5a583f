#include <gtest/gtest.h>

#include "nearlabel/model.h"
#include "test_util.h"

namespace nearlabel {
namespace {

const char* kCard = R"({
  "name": "m", "file": "m.onnx",
  "input": {"name": "in", "width": 32, "height": 32},
  "preprocess": {"resize": "direct", "channel_order": "BGR", "scale": 1, "mean": [1,2,3], "std": [1,1,1]},
  "feature": {"onnx_tensor": "f", "pooling": "mean", "dims": 16}
})";

TEST(ModelCardTest, ParsesFields) {
  auto c = ParseModelCard(kCard, "/x/m.card.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->name, "m");
  EXPECT_EQ(c->dims, 16);
  EXPECT_FALSE(c->preprocess.rgb);
  EXPECT_EQ(c->preprocess.resize, PreprocessSpec::Resize::kDirect);
  EXPECT_FLOAT_EQ(c->preprocess.mean[2], 3);
}

TEST(ModelCardTest, RejectsBadCardsWithReasons) {
  EXPECT_NE(ParseModelCard("[1]", "c").status().message().find("not a JSON object"),
            std::string::npos);
  EXPECT_NE(ParseModelCard(R"({"name":"m","file":"f","feature":{"onnx_tensor":"t","dims":0}})", "c")
                .status()
                .message()
                .find("dims"),
            std::string::npos);
  EXPECT_NE(
      ParseModelCard(
          R"({"name":"m","file":"f","preprocess":{"std":[1,0,1]},"feature":{"onnx_tensor":"t","dims":3}})",
          "c")
          .status()
          .message()
          .find("std"),
      std::string::npos);
  EXPECT_NE(ParseModelCard(R"({"name":"m","file":"f"})", "c").status().message().find("feature"),
            std::string::npos);
  EXPECT_NE(ParseModelCard(R"({"name":7,"file":"f"})", "c").status().message().find("string"),
            std::string::npos);
  // Found by fuzz/model_card_fuzzer: 2.24e19 into an int was undefined behaviour.
  for (const char* dims : {"2.24e19", "-1e10", "3.5"}) {
    auto r = ParseModelCard(
        std::string(R"({"name":"m","file":"f","feature":{"onnx_tensor":"t","dims":)") + dims + "}}",
        "c");
    ASSERT_FALSE(r.ok()) << dims;
    EXPECT_NE(r.status().message().find("must be an integer in range"), std::string::npos)
        << r.status().message();
  }
  EXPECT_NE(
      ParseModelCard(
          R"({"name":"m","file":"f","preprocess":{"scale":1e300},"feature":{"onnx_tensor":"t","dims":3}})",
          "c")
          .status()
          .message()
          .find("finite number"),
      std::string::npos);
}

TEST(ModelCardTest, FindsByNameAndPath) {
  testing::TempDir d;
  testing::WriteFile(d.Join("m/m.card.json"), kCard);
  testing::WriteFile(d.Join("m/m.onnx"), "not really onnx");
  auto byname = FindModel("m", {d.path()});
  ASSERT_TRUE(byname.ok()) << byname.status().ToString();
  EXPECT_EQ(byname->onnx_path, d.Join("m/m.onnx"));
  auto bypath = FindModel(d.Join("m/m.onnx"), {});
  ASSERT_TRUE(bypath.ok()) << bypath.status().ToString();
  auto missing = FindModel("nope", {d.path()});
  EXPECT_EQ(missing.status().code(), Status::Code::kNotFound);
  testing::WriteFile(d.Join("lonely.onnx"), "x");
  EXPECT_NE(FindModel(d.Join("lonely.onnx"), {}).status().message().find("has no card"),
            std::string::npos);
}

TEST(ModelCardTest, BuiltinCardsParse) {
  std::vector<std::string> errors;
  auto models = ListModels({BuiltinCardsDir()}, &errors);
  EXPECT_TRUE(errors.empty()) << errors[0];
  EXPECT_GE(models.size(), 4u);
}

}  // namespace
}  // namespace nearlabel
