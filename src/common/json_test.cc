#include "common/json.h"

#include <string>

#include <gtest/gtest.h>

#include "common/fs.h"
#include "common/large_stack.h"
#include "test_util.h"

#include <sys/stat.h>

namespace nearlabel {
namespace {

std::string Nested(int depth) {
  return std::string(static_cast<size_t>(depth), '[') +
         std::string(static_cast<size_t>(depth), ']');
}

TEST(JsonTest, NestingPastTheLimitIsRefusedBeforeParsing) {
  bool too_deep = true;
  EXPECT_TRUE(ParseJson(Nested(kMaxJsonDepth), &too_deep).is_array());
  EXPECT_FALSE(too_deep);
  // 100,000 levels: nlohmann::json's recursive dump overflowed the stack on this.
  const nlohmann::json deep = ParseJson(Nested(100000), &too_deep);
  EXPECT_TRUE(deep.is_discarded());
  EXPECT_TRUE(too_deep);
  EXPECT_TRUE(ParseJson("{\"a\":" + Nested(kMaxJsonDepth) + "}", &too_deep).is_discarded());
  EXPECT_TRUE(too_deep);
}

TEST(JsonTest, BracketsInStringsDoNotCount) {
  const std::string text = "{\"a\":\"" + std::string(1000, '[') + "\\\"{\"}";
  bool too_deep = true;
  const nlohmann::json j = ParseJson(text, &too_deep);
  EXPECT_FALSE(too_deep);
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["a"].get<std::string>().size(), 1002u);
}

TEST(JsonTest, SyntaxErrorsAreNotCalledTooDeep) {
  bool too_deep = true;
  EXPECT_TRUE(ParseJson("{\"a\":", &too_deep).is_discarded());
  EXPECT_FALSE(too_deep);
}

TEST(JsonTest, Utf8ValidationRefusesMalformedSequences) {
  EXPECT_TRUE(IsValidUtf8("plain"));
  EXPECT_TRUE(IsValidUtf8("양품 \xE2\x82\xAC \xF0\x9F\x98\x80"));
  for (const char* bad :
       {"\xFF", "\xC0\xAF", "\xE0\x80\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xC3", "a\x80"}) {
    EXPECT_FALSE(IsValidUtf8(bad)) << bad;
  }
}

// ONNX Runtime's start-up recursed once per byte of the command line; the call runs on a
// stack sized for it.
TEST(LargeStackTest, DeepRecursionRunsOnTheSizedStack) {
  std::function<int(int)> depth = [&](int n) -> int {
    volatile char pad[512];
    pad[0] = static_cast<char>(n);
    return n == 0 ? pad[0] : depth(n - 1) + 1;
  };
  int result = 0;
  // 30,000 frames of >= 512 bytes: over 15 MB, past the 8 MiB main stack.
  RunWithStack(size_t{64} << 20, [&] { result = depth(30000); });
  EXPECT_EQ(result, 30000);
  EXPECT_GT(CommandLineBytes(), 0u);
}

TEST(ReadFileTest, FifosAndDevicesAreRefusedWithoutReading) {
  testing::TempDir d;
  const std::string fifo = d.Join("pipe.jpg");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto r = ReadFileToString(fifo);  // blocked forever before (no writer)
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("is a FIFO, not a file"), std::string::npos);
  auto z = ReadFileToString("/dev/zero", 1u << 30);
  ASSERT_FALSE(z.ok());
  EXPECT_NE(z.status().message().find("character device"), std::string::npos);
  testing::WriteFile(d.Join("big"), std::string(100, 'x'));
  auto big = ReadFileToString(d.Join("big"), 10);
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("larger than 10 bytes"), std::string::npos);
}

}  // namespace
}  // namespace nearlabel
