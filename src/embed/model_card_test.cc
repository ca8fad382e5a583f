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
  EXPECT_EQ(c->run_batch, 0);  // absent: the backend's default
}

// The error message ParseModelCard gives for `json` (a test failure if it accepts it).
std::string CardError(const std::string& json) {
  auto r = ParseModelCard(json, "c");
  EXPECT_FALSE(r.ok()) << json;
  return r.ok() ? "" : r.status().message();
}

#define EXPECT_HAS(text, part) EXPECT_NE((text).find(part), std::string::npos) << (text)

TEST(ModelCardTest, RejectsBadCardsWithReasons) {
  EXPECT_HAS(CardError("[1]"), "not a JSON object");
  EXPECT_HAS(CardError(R"({"name":"m","file":"f","feature":{"onnx_tensor":"t","dims":0}})"),
             "dims");
  EXPECT_HAS(CardError(R"({"name":"m","file":"f","preprocess":{"std":[1,0,1]},)"
                       R"("feature":{"onnx_tensor":"t","dims":3}})"),
             "std");
  EXPECT_HAS(CardError(R"({"name":"m","file":"f"})"), "feature");
  EXPECT_HAS(CardError(R"({"name":7,"file":"f"})"), "string");
  // Found by fuzz/model_card_fuzzer: 2.24e19 into an int was undefined behaviour.
  for (const char* dims : {"2.24e19", "-1e10", "3.5"}) {
    EXPECT_HAS(
        CardError(std::string(R"({"name":"m","file":"f","feature":{"onnx_tensor":"t","dims":)") +
                  dims + "}}"),
        "must be an integer in range");
  }
  for (const char* run : {"-1", "1025"}) {
    EXPECT_HAS(CardError(std::string(R"({"name":"m","file":"f","input":{"run_batch":)") + run +
                         R"(},"feature":{"onnx_tensor":"t","dims":3}})"),
               "run_batch must be within 0..1024");
  }
  EXPECT_HAS(CardError(R"({"name":"m","file":"f","preprocess":{"scale":1e300},)"
                       R"("feature":{"onnx_tensor":"t","dims":3}})"),
             "finite number");
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
