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

// Every format's header is read for its size first: a small file declaring 30000 x 30000
// pixels is refused without allocating them, whatever the format.
TEST(DecodeTest, RefusesBombsInEveryFormat) {
  const cv::Mat small = SyntheticImage(16, 16, 1);
  auto refused = [](const std::string& bytes, const char* what) {
    auto r = DecodeImage(bytes);
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument) << what;
    EXPECT_NE(r.status().message().find("30000x30000"), std::string::npos)
        << what << ": " << r.status().message();
  };
  std::string bmp = Encode(small, ".bmp");
  const unsigned char le30k[4] = {0x30, 0x75, 0, 0};
  bmp.replace(18, 4, reinterpret_cast<const char*>(le30k), 4);
  bmp.replace(22, 4, reinterpret_cast<const char*>(le30k), 4);
  refused(bmp, "bmp");

  std::string tiff = Encode(small, ".tiff");
  // Patch the values of tags 256 and 257 in IFD0, whatever their type.
  const bool le = tiff[0] == 'I';
  auto u16 = [&](size_t i) {
    const auto b = [&](size_t k) {
      return static_cast<unsigned>(static_cast<unsigned char>(tiff[k]));
    };
    return le ? b(i) | (b(i + 1) << 8) : (b(i) << 8) | b(i + 1);
  };
  const size_t ifd = le ? u16(4) | (u16(6) << 16) : (u16(4) << 16) | u16(6);
  for (size_t e = 0; e < u16(ifd); ++e) {
    const size_t at = ifd + 2 + 12 * e;
    if (u16(at) != 256 && u16(at) != 257) continue;
    const bool is_short = u16(at + 2) == 3;
    std::string v =
        le ? std::string("\x30\x75\0\0", 4)
           : (is_short ? std::string("\x75\x30\0\0", 4) : std::string("\0\0\x75\x30", 4));
    tiff.replace(at + 8, 4, v);
  }
  refused(tiff, "tiff");

  // WebP extended header (VP8X) with a 30000 x 30000 canvas.
  std::string vp8x = std::string("RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0", 24);
  const unsigned char canvas[6] = {0x2F, 0x75, 0, 0x2F, 0x75, 0};  // 29999 = size - 1
  vp8x += std::string(reinterpret_cast<const char*>(canvas), 6);
  refused(vp8x, "webp");

  // JPEG frame header (SOF0) rewritten to 30000 x 30000.
  std::string jpg = Encode(small, ".jpg");
  for (size_t i = 2; i + 9 < jpg.size(); ++i) {
    if (static_cast<unsigned char>(jpg[i]) == 0xFF &&
        static_cast<unsigned char>(jpg[i + 1]) == 0xC0) {
      jpg.replace(i + 5, 4, std::string("\x75\x30\x75\x30", 4));
      break;
    }
  }
  refused(jpg, "jpeg");

  // A header too short to state the size is refused too (never decoded blind).
  auto stub = DecodeImage(std::string("BM\0\0", 4));
  ASSERT_FALSE(stub.ok());
  EXPECT_NE(stub.status().message().find("cannot read the bmp header"), std::string::npos);
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
