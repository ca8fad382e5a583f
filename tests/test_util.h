// Helpers for tests: scratch directories and generated images.
#pragma once

#include <string>

#include <opencv2/core.hpp>

namespace nearlabel::testing {

// A fresh directory under $TMPDIR, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string Join(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

// Writes `bytes` to `path`, creating parent directories.
void WriteFile(const std::string& path, const std::string& bytes);
// Encodes `img` with OpenCV by extension (".jpg", ".png", ...).
std::string Encode(const cv::Mat& img, const std::string& ext);
// A smooth synthetic colour image whose pattern depends on `seed`.
cv::Mat SyntheticImage(int width, int height, int seed);
// $NAME or "" (tests that need shared data skip when it is unset).
std::string EnvOr(const char* name, const std::string& fallback = "");

}  // namespace nearlabel::testing
