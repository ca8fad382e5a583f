// Image decoding and model preprocessing (OpenCV imgcodecs + imgproc).
#pragma once

#include <cstdint>
#include <string>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "nearlabel/status.h"

namespace nearlabel {

// Decodes an encoded image (JPEG, PNG, BMP, TIFF, WebP) held in memory to 8-bit, 3-channel
// BGR with its EXIF orientation applied. Greyscale becomes 3 equal channels, 16-bit is
// scaled to 8-bit, alpha is dropped. Fails with Corruption and a one-line reason for empty,
// unknown-format, truncated or undecodable data, and with InvalidArgument when the declared
// size exceeds `max_pixels` (checked before the pixels are allocated where the format allows).
// Thread-safe.
Result<cv::Mat> DecodeImage(const std::string& bytes, int64_t max_pixels = 200'000'000);

// Short name of the format detected from the first bytes ("jpeg", "png", ...), or "" if none.
std::string SniffImageFormat(const std::string& bytes);

// How a model wants its input tensor built; set by the model card.
struct PreprocessSpec {
  enum class Resize {
    kDirect,           // resize straight to width x height
    kShorterSideCrop,  // resize the shorter side to `resize_shorter`, then centre-crop
  };
  int width = 224;
  int height = 224;
  Resize resize = Resize::kShorterSideCrop;
  int resize_shorter = 256;
  int interpolation = cv::INTER_LINEAR;      // cv::InterpolationFlags
  bool rgb = true;                           // channel order of the tensor (false: BGR)
  float scale = 1.0f / 255.0f;               // applied to 0..255 pixel values first
  float mean[3] = {0.485f, 0.456f, 0.406f};  // in tensor channel order, after scale
  float std[3] = {0.229f, 0.224f, 0.225f};   // in tensor channel order
};

// Resizes/crops `bgr` (8UC3) and writes the normalised planar tensor, 3 x height x width
// floats, to `dst`: dst[c][y][x] = (pixel_c * scale - mean[c]) / std[c]. Thread-safe.
void PreprocessInto(const cv::Mat& bgr, const PreprocessSpec& spec, float* dst);

// A small JPEG of `bgr` (8UC3) whose longest side is at most `longest_side` pixels (the
// whole image, not the model's crop), for pages and reports. Thread-safe.
std::string EncodeThumbnail(const cv::Mat& bgr, int longest_side = 160, int quality = 80);

// EncodeThumbnail of the image file at `path` (for rows stored before thumbnails were kept,
// while their file is still there). Thread-safe.
Result<std::string> ThumbnailOfFile(const std::string& path, int64_t max_pixels = 200'000'000);

// A 63-bit perceptual hash (pHash) of `bgr` (8UC3): the grey image at 32 x 32 (area
// averaging), its 2-D DCT, and one bit per coefficient of the 8 x 8 lowest frequencies but the
// mean: above their median or not. Re-encoding, resizing or a grey copy moves it by a few
// bits; different images differ in about half (bench/README.md, "Audit"). Thread-safe.
uint64_t PerceptualHash(const cv::Mat& bgr);
// Bits in which two hashes differ.
int HashDistance(uint64_t a, uint64_t b);

// The resized and cropped 8-bit image that PreprocessInto normalises (for tests, thumbnails).
cv::Mat ResizeAndCrop(const cv::Mat& bgr, const PreprocessSpec& spec);

}  // namespace nearlabel
