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

// Reads width x height from the header (PNG IHDR, JPEG SOFn, BMP, WebP, TIFF IFD0) without
// decoding, so that a decompression bomb is refused before its pixels are allocated. Returns false
// if unknown.
bool PeekDimensions(const std::string& b, const std::string& format, int64_t* w, int64_t* h) {
  auto u8 = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(b[i])); };
  if (format == "png" && b.size() >= 24) {
    *w = (u8(16) << 24) | (u8(17) << 16) | (u8(18) << 8) | u8(19);
    *h = (u8(20) << 24) | (u8(21) << 16) | (u8(22) << 8) | u8(23);
    return true;
  }
  if (format == "bmp" && b.size() >= 26) {
    const uint32_t dib = u8(14) | (u8(15) << 8) | (u8(16) << 16) | (u8(17) << 24);
    if (dib == 12) {  // BITMAPCOREHEADER: 16-bit sizes
      *w = u8(18) | (u8(19) << 8);
      *h = u8(20) | (u8(21) << 8);
    } else {  // BITMAPINFOHEADER and later: signed 32-bit (a negative height is top-down)
      *w = static_cast<int32_t>(u8(18) | (u8(19) << 8) | (u8(20) << 16) | (u8(21) << 24));
      *h = static_cast<int32_t>(u8(22) | (u8(23) << 8) | (u8(24) << 16) | (u8(25) << 24));
      if (*h < 0) *h = -*h;
    }
    return true;
  }
  if (format == "webp" && b.size() >= 30) {
    const std::string chunk = b.substr(12, 4);
    if (chunk == "VP8X") {  // canvas size minus one, 24 bits each
      *w = 1 + (u8(24) | (u8(25) << 8) | (u8(26) << 16));
      *h = 1 + (u8(27) | (u8(28) << 8) | (u8(29) << 16));
      return true;
    }
    if (chunk == "VP8 ") {  // key frame: 3-byte tag, start code, 14-bit sizes
      *w = (u8(26) | (u8(27) << 8)) & 0x3FFF;
      *h = (u8(28) | (u8(29) << 8)) & 0x3FFF;
      return true;
    }
    if (chunk == "VP8L") {  // signature byte, then 14-bit sizes minus one
      const uint32_t bits = u8(21) | (u8(22) << 8) | (u8(23) << 16) | (u8(24) << 24);
      *w = 1 + (bits & 0x3FFF);
      *h = 1 + ((bits >> 14) & 0x3FFF);
      return true;
    }
    return false;
  }
  if (format == "tiff" && b.size() >= 8) {  // the first IFD's ImageWidth and ImageLength
    const bool le = b[0] == 'I';
    auto u16 = [&](size_t i) { return le ? u8(i) | (u8(i + 1) << 8) : (u8(i) << 8) | u8(i + 1); };
    auto u32 = [&](size_t i) {
      return le ? u16(i) | (u16(i + 2) << 16) : (u16(i) << 16) | u16(i + 2);
    };
    const size_t ifd = u32(4);
    if (ifd + 2 > b.size()) return false;
    const size_t count = u16(ifd);
    bool have_w = false, have_h = false;
    for (size_t e = 0; e < count && ifd + 2 + 12 * (e + 1) <= b.size(); ++e) {
      const size_t at = ifd + 2 + 12 * e;
      const uint32_t tag = u16(at), type = u16(at + 2);
      const int64_t value = type == 3 ? u16(at + 8) : type == 4 ? u32(at + 8) : -1;
      if (tag == 256) *w = value, have_w = true;
      if (tag == 257) *h = value, have_h = true;
    }
    return have_w && have_h;
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
    if (w > max_pixels || h > max_pixels || w * h > max_pixels) {
      return Status::InvalidArgument(format + " declares " + std::to_string(w) + "x" +
                                     std::to_string(h) + " pixels, over the limit of " +
                                     std::to_string(max_pixels));
    }
  } else if (format != "jpeg") {
    // A JPEG's frame header may follow data the walk cannot cross; the checks below and the
    // pixel count after decoding cover it. The other formats must show their size first.
    return Status::Corruption("cannot read the " + format + " header (image size unknown)");
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
