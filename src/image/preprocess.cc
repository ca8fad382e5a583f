#include <algorithm>
#include <cmath>
#include <vector>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "common/fs.h"
#include "nearlabel/image.h"

namespace nearlabel {

cv::Mat ResizeAndCrop(const cv::Mat& bgr, const PreprocessSpec& spec) {
  cv::Mat out;
  if (spec.resize == PreprocessSpec::Resize::kDirect) {
    cv::resize(bgr, out, cv::Size(spec.width, spec.height), 0, 0, spec.interpolation);
    return out;
  }
  // Shorter side to resize_shorter (torchvision Resize(int) rounding), then centre crop.
  const int w = bgr.cols, h = bgr.rows;
  int nw, nh;
  if (w <= h) {
    nw = spec.resize_shorter;
    nh = static_cast<int>(static_cast<int64_t>(spec.resize_shorter) * h / w);
  } else {
    nh = spec.resize_shorter;
    nw = static_cast<int>(static_cast<int64_t>(spec.resize_shorter) * w / h);
  }
  nw = std::max(nw, spec.width);
  nh = std::max(nh, spec.height);
  if (static_cast<int64_t>(nw) * nh > 16 * static_cast<int64_t>(spec.width) * spec.height) {
    // Extreme aspect ratio (a 1 x 51400 strip would resize to 10 GB): take the source region
    // that the crop window covers and resize only that. Normal photos keep the exact
    // torchvision order below, so their embeddings do not change.
    const double cw = static_cast<double>(spec.width) * w / nw;
    const double ch = static_cast<double>(spec.height) * h / nh;
    const int rw = std::clamp(static_cast<int>(std::lround(cw)), 1, w);
    const int rh = std::clamp(static_cast<int>(std::lround(ch)), 1, h);
    cv::resize(bgr(cv::Rect((w - rw) / 2, (h - rh) / 2, rw, rh)), out,
               cv::Size(spec.width, spec.height), 0, 0, spec.interpolation);
    return out;
  }
  cv::Mat resized;
  cv::resize(bgr, resized, cv::Size(nw, nh), 0, 0, spec.interpolation);
  const int x = static_cast<int>(std::lround((nw - spec.width) / 2.0));
  const int y = static_cast<int>(std::lround((nh - spec.height) / 2.0));
  resized(cv::Rect(std::min(x, nw - spec.width), std::min(y, nh - spec.height), spec.width,
                   spec.height))
      .copyTo(out);
  return out;
}

void PreprocessInto(const cv::Mat& bgr, const PreprocessSpec& spec, float* dst) {
  cv::Mat img = ResizeAndCrop(bgr, spec);
  const int plane = spec.width * spec.height;
  // Per tensor channel c: value = pixel * (scale / std) - mean / std, one fused multiply-add.
  float a[3], b[3];
  for (int c = 0; c < 3; ++c) {
    a[c] = spec.scale / spec.std[c];
    b[c] = -spec.mean[c] / spec.std[c];
  }
  // Pixels are BGR; the tensor's first plane is R for RGB models. Choosing the source byte
  // offsets once keeps the inner loop branch-free so the compiler vectorises it.
  const int first = spec.rgb ? 2 : 0, last = spec.rgb ? 0 : 2;
  for (int yy = 0; yy < spec.height; ++yy) {
    const uint8_t* row = img.ptr<uint8_t>(yy);
    float* d0 = dst + yy * spec.width;
    float* d1 = d0 + plane;
    float* d2 = d1 + plane;
    for (int xx = 0; xx < spec.width; ++xx) {
      d0[xx] = row[3 * xx + first] * a[0] + b[0];
      d1[xx] = row[3 * xx + 1] * a[1] + b[1];
      d2[xx] = row[3 * xx + last] * a[2] + b[2];
    }
  }
}

std::string EncodeThumbnail(const cv::Mat& bgr, int longest_side, int quality) {
  cv::Mat small = bgr;
  const int longest = std::max(bgr.cols, bgr.rows);
  if (longest > longest_side) {
    const double f = static_cast<double>(longest_side) / longest;
    cv::resize(bgr, small,
               cv::Size(std::max(1, static_cast<int>(std::lround(bgr.cols * f))),
                        std::max(1, static_cast<int>(std::lround(bgr.rows * f)))),
               0, 0, cv::INTER_AREA);
  }
  std::vector<uchar> jpeg;
  cv::imencode(".jpg", small, jpeg, {cv::IMWRITE_JPEG_QUALITY, quality});
  return std::string(jpeg.begin(), jpeg.end());
}

uint64_t PerceptualHash(const cv::Mat& bgr) {
  cv::Mat grey, small, f, freq;
  cv::cvtColor(bgr, grey, cv::COLOR_BGR2GRAY);
  cv::resize(grey, small, cv::Size(32, 32), 0, 0, cv::INTER_AREA);
  small.convertTo(f, CV_32F);
  cv::dct(f, freq);
  std::vector<float> low;
  for (int y = 0; y < 8; ++y) {
    for (int x = 0; x < 8; ++x) {
      if (x || y) low.push_back(freq.at<float>(y, x));  // the mean (DC) says only brightness
    }
  }
  std::vector<float> sorted = low;
  std::nth_element(sorted.begin(), sorted.begin() + sorted.size() / 2, sorted.end());
  const float median = sorted[sorted.size() / 2];
  uint64_t h = 0;
  for (size_t i = 0; i < low.size(); ++i) h |= static_cast<uint64_t>(low[i] > median) << i;
  return h;
}

int HashDistance(uint64_t a, uint64_t b) { return __builtin_popcountll(a ^ b); }

Result<std::string> ThumbnailOfFile(const std::string& path, int64_t max_pixels) {
  NL_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path, 1ull << 30));
  NL_ASSIGN_OR_RETURN(cv::Mat img, DecodeImage(bytes, max_pixels));
  return EncodeThumbnail(img);
}

}  // namespace nearlabel
