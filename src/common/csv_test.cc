#include "common/csv.h"

#include <gtest/gtest.h>

namespace nearlabel {
namespace {

TEST(CsvTest, QuotesSeparatorsNewlinesCrlf) {
  auto rows =
      ParseCsv("path,label\r\n\"a, b.jpg\",\"say \"\"hi\"\"\"\nc.jpg,\"two\nlines\"\n\n", ',');
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 3u);
  EXPECT_EQ((*rows)[1][0], "a, b.jpg");
  EXPECT_EQ((*rows)[1][1], "say \"hi\"");
  EXPECT_EQ((*rows)[2][1], "two\nlines");
}

TEST(CsvTest, TabsAndBom) {
  auto rows = ParseCsv(
      "\xEF\xBB\xBF"
      "file\tclass\nx.png\tok",
      '\t');
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ((*rows)[0][0], "file");
  EXPECT_EQ((*rows)[1][1], "ok");
}

TEST(CsvTest, UnterminatedQuoteIsAnError) {
  auto rows = ParseCsv("a,b\n\"oops,c\n", ',');
  ASSERT_FALSE(rows.ok());
  EXPECT_NE(rows.status().message().find("line 2"), std::string::npos);
}

}  // namespace
}  // namespace nearlabel
