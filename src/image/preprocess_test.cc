#include <gtest/gtest.h>

#include <opencv2/imgproc.hpp>

#include "nearlabel/image.h"
#include "test_util.h"

namespace nearlabel {
namespace {

TEST(PreprocessTest, MatchesNaiveNormalisationRgb) {
  cv::Mat img = testing::SyntheticImage(300, 200, 4);
  PreprocessSpec spec;  // shorter side 256, crop 224, RGB, ImageNet mean/std
  std::vector<float> out(3 * 224 * 224);
  PreprocessInto(img, spec, out.data());
  // Naive reference: resize shorter side to 256 -> 384x256, crop centre 224.
  cv::Mat resized;
  cv::resize(img, resized, cv::Size(384, 256), 0, 0, cv::INTER_LINEAR);
  cv::Mat crop = resized(cv::Rect(80, 16, 224, 224));
  for (int y : {0, 100, 223}) {
    for (int x : {0, 57, 223}) {
      cv::Vec3b bgr = crop.at<cv::Vec3b>(y, x);
      for (int c = 0; c < 3; ++c) {
        float pixel = bgr[2 - c];  // RGB order
        float want = (pixel / 255.f - spec.mean[c]) / spec.std[c];
        EXPECT_NEAR(out[c * 224 * 224 + y * 224 + x], want, 1e-4) << y << "," << x << "," << c;
      }
    }
  }
}

TEST(PreprocessTest, DirectResizeBgrCaffeMean) {
  cv::Mat img(10, 20, CV_8UC3, cv::Scalar(10, 20, 30));
  PreprocessSpec spec;
  spec.width = spec.height = 8;
  spec.resize = PreprocessSpec::Resize::kDirect;
  spec.rgb = false;
  spec.scale = 1;
  float mean[3] = {104, 117, 123}, stdv[3] = {1, 1, 1};
  std::copy(mean, mean + 3, spec.mean);
  std::copy(stdv, stdv + 3, spec.std);
  std::vector<float> out(3 * 64);
  PreprocessInto(img, spec, out.data());
  EXPECT_FLOAT_EQ(out[0], 10 - 104);
  EXPECT_FLOAT_EQ(out[64], 20 - 117);
  EXPECT_FLOAT_EQ(out[128], 30 - 123);
}

TEST(PreprocessTest, TinyImagesAreUpscaled) {
  cv::Mat img = testing::SyntheticImage(28, 28, 1);
  PreprocessSpec spec;
  EXPECT_EQ(ResizeAndCrop(img, spec).size(), cv::Size(224, 224));
  cv::Mat one(1, 1, CV_8UC3, cv::Scalar(1, 2, 3));
  EXPECT_EQ(ResizeAndCrop(one, spec).size(), cv::Size(224, 224));
}

// A 1 x 51400 strip (found by the image_decode fuzzer) used to be resized to 256 x 13 million
// before cropping: 10 GB. Only the source region under the crop window is resized now.
TEST(PreprocessTest, ExtremeAspectRatioCropsBeforeResizing) {
  PreprocessSpec spec;
  cv::Mat strip(1, 51400, CV_8UC3, cv::Scalar(0, 0, 0));
  strip(cv::Rect(25690, 0, 20, 1)).setTo(cv::Scalar(200, 100, 50));  // centre columns only
  cv::Mat out = ResizeAndCrop(strip, spec);
  ASSERT_EQ(out.size(), cv::Size(224, 224));
  EXPECT_EQ(out.at<cv::Vec3b>(0, 0), cv::Vec3b(200, 100, 50));
  EXPECT_EQ(out.at<cv::Vec3b>(223, 223), cv::Vec3b(200, 100, 50));
  cv::Mat tall(40000, 3, CV_8UC3, cv::Scalar(7, 8, 9));
  EXPECT_EQ(ResizeAndCrop(tall, spec).size(), cv::Size(224, 224));
  // A 4:1 panorama is under the bound and keeps the resize-then-crop order.
  cv::Mat wide = testing::SyntheticImage(800, 200, 2);
  cv::Mat resized;
  cv::resize(wide, resized, cv::Size(1024, 256), 0, 0, cv::INTER_LINEAR);
  cv::Mat want = resized(cv::Rect(400, 16, 224, 224));
  EXPECT_EQ(cv::norm(ResizeAndCrop(wide, spec), want, cv::NORM_INF), 0);
}

}  // namespace
}  // namespace nearlabel
