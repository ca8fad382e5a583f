#include <cstring>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "nearlabel/image.h"

namespace nearlabel {
namespace {

bool StartsWith(const std::string& s, const char* prefix, size_t n) {
  return s.size() >= n && std::memcmp(s.data(), prefix, n) == 0;
}

// Offset of the main image's start-of-scan marker, found by walking the JPEG segment chain
// (which skips APPn segments such as an EXIF thumbnail), or npos.
size_t JpegScanStart(const std::string& b) {
  auto u8 = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(b[i])); };
  size_t i = 2;
  while (i + 3 < b.size()) {
    if (u8(i) != 0xFF) return std::string::npos;
    uint32_t marker = u8(i + 1);
    if (marker == 0xFF) {
      ++i;
      continue;
    }
    if (marker == 0xDA) return i;
    i += 2 + ((u8(i + 2) << 8) | u8(i + 3));
  }
  return std::string::npos;
}

// libjpeg decodes a JPEG that was cut short without complaint, filling the missing rows with
// grey. A complete JPEG has the EOI marker FF D9 after its scan data (FF D9 cannot occur
// inside entropy-coded data), so its absence after the main scan means the file was truncated.
bool JpegHasEndMarker(const std::string& b, size_t sos) {
  for (size_t i = b.size(); i >= sos + 2; --i) {
    if (static_cast<unsigned char>(b[i - 2]) == 0xFF &&
        static_cast<unsigned char>(b[i - 1]) == 0xD9) {
      return true;
    }
  }
  return false;
}

// Reads width x height from a PNG IHDR or a JPEG SOFn header without decoding, so that a
// decompression bomb is refused before its pixels are allocated. Returns false if unknown.
bool PeekDimensions(const std::string& b, const std::string& format, int64_t* w, int64_t* h) {
  auto u8 = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(b[i])); };
  if (format == "png" && b.size() >= 24) {
    *w = (u8(16) << 24) | (u8(17) << 16) | (u8(18) << 8) | u8(19);
    *h = (u8(20) << 24) | (u8(21) << 16) | (u8(22) << 8) | u8(23);
    return true;
  }
  if (format == "jpeg") {
    size_t i = 2;
    while (i + 9 < b.size()) {
      if (u8(i) != 0xFF) return false;
      uint32_t marker = u8(i + 1);
      if (marker == 0xFF) {
        ++i;
        continue;
      }
      uint32_t len = (u8(i + 2) << 8) | u8(i + 3);
      bool sof =
          marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
      if (sof) {
        *h = (u8(i + 5) << 8) | u8(i + 6);
        *w = (u8(i + 7) << 8) | u8(i + 8);
        return true;
      }
      if (marker == 0xDA) return false;  // start of scan before any frame header
      i += 2 + len;
    }
  }
  return false;
}

}  // namespace

std::string SniffImageFormat(const std::string& b) {
  if (StartsWith(b, "\xFF\xD8\xFF", 3)) return "jpeg";
  if (StartsWith(b, "\x89PNG\r\n\x1A\n", 8)) return "png";
  if (StartsWith(b, "BM", 2)) return "bmp";
  if (StartsWith(b, "II*\0", 4) || StartsWith(b, "MM\0*", 4)) return "tiff";
  if (b.size() >= 12 && StartsWith(b, "RIFF", 4) && std::memcmp(b.data() + 8, "WEBP", 4) == 0) {
    return "webp";
  }
  return "";
}

Result<cv::Mat> DecodeImage(const std::string& bytes, int64_t max_pixels) {
  if (bytes.empty()) return Status::Corruption("empty file (0 bytes)");
  std::string format = SniffImageFormat(bytes);
  if (format.empty()) return Status::Corruption("not an image (unrecognised file signature)");
  int64_t w = 0, h = 0;
  if (PeekDimensions(bytes, format, &w, &h)) {
    if (w <= 0 || h <= 0) return Status::Corruption(format + " header declares an empty image");
    if (w * h > max_pixels) {
      return Status::InvalidArgument(format + " declares " + std::to_string(w) + "x" +
                                     std::to_string(h) + " pixels, over the limit of " +
                                     std::to_string(max_pixels));
    }
  }
  if (format == "jpeg") {
    const size_t sos = JpegScanStart(bytes);
    if (sos == std::string::npos) {
      return Status::Corruption("cannot decode jpeg (corrupt: no image data found)");
    }
    if (!JpegHasEndMarker(bytes, sos)) {
      return Status::Corruption("truncated JPEG (no end-of-image marker)");
    }
  }
  cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8UC1,
              const_cast<char*>(bytes.data()));  // imdecode only reads it
  cv::Mat img;
  try {
    // IMREAD_COLOR: 8-bit BGR, greyscale expanded, 16-bit scaled down, EXIF orientation applied.
    img = cv::imdecode(raw, cv::IMREAD_COLOR);
  } catch (const cv::Exception& e) {
    return Status::Corruption("cannot decode " + format + ": " + e.err);
  }
  if (img.empty()) return Status::Corruption("cannot decode " + format + " (corrupt or truncated)");
  if (img.type() != CV_8UC3) {
    return Status::Internal("decoder returned an unexpected pixel type for " + format);
  }
  if (static_cast<int64_t>(img.total()) > max_pixels) {
    return Status::InvalidArgument("image has " + std::to_string(img.total()) +
                                   " pixels, over the limit of " + std::to_string(max_pixels));
  }
  return img;
}

}  // namespace nearlabel
