// bench/make_image_variants: writes N distinct JPEG images derived from a folder-per-class
// dataset (flips, rotations, crops and brightness shifts of its images), keeping the class
// folders, so that ingest can be measured at sizes the shared datasets do not reach.
// Usage: make_image_variants SRC_DATASET DST_DIR N
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: make_image_variants SRC_DATASET DST_DIR N\n");
    return 2;
  }
  const fs::path src = argv[1], dst = argv[2];
  const long n = std::atol(argv[3]);
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(src)) {
    const auto ext = e.path().extension().string();
    if (e.is_regular_file() && (ext == ".jpg" || ext == ".png")) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    std::fprintf(stderr, "make_image_variants: no images under %s\n", argv[1]);
    return 1;
  }
  long written = 0;
  for (int variant = 0; written < n; ++variant) {
    for (size_t i = 0; i < files.size() && written < n; ++i) {
      cv::Mat img = cv::imread(files[i].string(), cv::IMREAD_COLOR);
      if (img.empty()) continue;
      // Variant v: one of 8 orientations, a crop that grows with v, a brightness shift.
      const int orient = variant % 8;
      if (orient & 1) cv::flip(img, img, 1);
      if (orient & 2) cv::flip(img, img, 0);
      if (orient & 4) cv::transpose(img, img);
      const int margin = (variant / 8) % 10;
      const int cx = img.cols * margin / 100, cy = img.rows * margin / 100;
      img = img(cv::Rect(cx, cy, img.cols - 2 * cx, img.rows - 2 * cy)).clone();
      img.convertTo(img, -1, 1.0, (variant * 7) % 21 - 10);
      const fs::path out_dir = dst / files[i].parent_path().filename();
      fs::create_directories(out_dir);
      const fs::path out =
          out_dir / (files[i].stem().string() + "_v" + std::to_string(variant) + ".jpg");
      if (!cv::imwrite(out.string(), img)) {
        std::fprintf(stderr, "make_image_variants: cannot write %s\n", out.c_str());
        return 1;
      }
      ++written;
    }
  }
  std::printf("make_image_variants: wrote %ld images to %s\n", written, argv[2]);
  return 0;
}
