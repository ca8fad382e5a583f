#include <gtest/gtest.h>

#include <opencv2/imgcodecs.hpp>

#include "nearlabel/image.h"
#include "test_util.h"

namespace nearlabel {
namespace {

using testing::Encode;
using testing::SyntheticImage;

TEST(DecodeTest, FormatsDecodeTo8BitBgr) {
  cv::Mat img = SyntheticImage(40, 30, 1);
  for (const char* ext : {".jpg", ".png", ".bmp", ".tiff", ".webp"}) {
    auto m = DecodeImage(Encode(img, ext));
    ASSERT_TRUE(m.ok()) << ext << ": " << m.status().ToString();
    EXPECT_EQ(m->type(), CV_8UC3) << ext;
    EXPECT_EQ(m->cols, 40) << ext;
    EXPECT_EQ(m->rows, 30) << ext;
  }
}

TEST(DecodeTest, GreyAnd16BitBecome8BitThreeChannel) {
  cv::Mat grey(10, 12, CV_8UC1, cv::Scalar(77));
  auto g = DecodeImage(Encode(grey, ".png"));
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->type(), CV_8UC3);
  EXPECT_EQ(g->at<cv::Vec3b>(5, 5), cv::Vec3b(77, 77, 77));
  cv::Mat deep(10, 12, CV_16UC1, cv::Scalar(40000));
  auto d = DecodeImage(Encode(deep, ".png"));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->type(), CV_8UC3);
  EXPECT_EQ(d->at<cv::Vec3b>(0, 0)[0], 40000 / 256);
}

TEST(DecodeTest, BadInputsGiveOneLineReasons) {
  EXPECT_NE(DecodeImage("").status().message().find("empty"), std::string::npos);
  EXPECT_NE(DecodeImage("hello, world").status().message().find("not an image"), std::string::npos);
  std::string jpg = Encode(SyntheticImage(64, 64, 2), ".jpg");
  auto t = DecodeImage(jpg.substr(0, jpg.size() / 2));
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("truncated JPEG"), std::string::npos);
  std::string png = Encode(SyntheticImage(64, 64, 2), ".png");
  auto p = DecodeImage(png.substr(0, png.size() / 2));
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("png"), std::string::npos);
  std::string corrupt = jpg;
  for (size_t i = 200; i < corrupt.size() - 2; ++i) corrupt[i] = static_cast<char>(i * 7);
  // Either refused or decoded, but never a crash; a garbage scan is usually refused.
  (void)DecodeImage(corrupt);
}

TEST(DecodeTest, RefusesDecompressionBombBeforeDecoding) {
  std::string png = Encode(SyntheticImage(16, 16, 1), ".png");
  // Rewrite the IHDR size to 30000 x 30000.
  const unsigned char dims[8] = {0, 0, 0x75, 0x30, 0, 0, 0x75, 0x30};
  png.replace(16, 8, reinterpret_cast<const char*>(dims), 8);
  auto r = DecodeImage(png);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("30000x30000"), std::string::npos);
}

// An APP1 Exif segment carrying only an Orientation tag.
std::string ExifOrientation(uint16_t value) {
  std::string tiff = std::string("MM\0*\0\0\0\x08", 8) + std::string("\0\x01", 2) +  // 1 entry
                     std::string("\x01\x12\0\x03\0\0\0\x01", 8) +  // 0x0112 SHORT x1
                     std::string(1, '\0') + std::string(1, static_cast<char>(value)) +
                     std::string("\0\0", 2) + std::string("\0\0\0\0", 4);
  std::string payload = std::string("Exif\0\0", 6) + tiff;
  uint16_t len = static_cast<uint16_t>(payload.size() + 2);
  return std::string("\xFF\xE1", 2) + static_cast<char>(len >> 8) + static_cast<char>(len & 255) +
         payload;
}

TEST(DecodeTest, AppliesExifOrientation) {
  std::string jpg = Encode(SyntheticImage(40, 20, 3), ".jpg");
  std::string rotated = jpg.substr(0, 2) + ExifOrientation(6) + jpg.substr(2);
  auto plain = DecodeImage(jpg);
  auto turned = DecodeImage(rotated);
  ASSERT_TRUE(plain.ok());
  ASSERT_TRUE(turned.ok()) << turned.status().ToString();
  EXPECT_EQ(plain->cols, 40);
  EXPECT_EQ(turned->cols, 20);  // orientation 6: rotate 90 degrees clockwise
  EXPECT_EQ(turned->rows, 40);
}

TEST(DecodeTest, SniffsFormats) {
  EXPECT_EQ(SniffImageFormat(Encode(SyntheticImage(8, 8, 1), ".png")), "png");
  EXPECT_EQ(SniffImageFormat("GIF89a"), "");
}

}  // namespace
}  // namespace nearlabel
