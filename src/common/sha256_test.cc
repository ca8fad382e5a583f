#include "common/sha256.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace nearlabel {
namespace {

TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256Test, FileMatchesBuffer) {
  testing::TempDir dir;
  std::string data(3'000'000, 'x');
  testing::WriteFile(dir.Join("f"), data);
  auto h = Sha256File(dir.Join("f"));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(*h, Sha256Hex(data));
  EXPECT_FALSE(Sha256File(dir.Join("missing")).ok());
}

}  // namespace
}  // namespace nearlabel
