// make_test_images: writes the hostile and unusual image files the hostile-input test feeds
// to nearlabel, derived from one real image:
//   rgb.jpg       the source re-encoded (the reference the variants are compared with)
//   cmyk.jpg      the same pixels as an Adobe-style CMYK JPEG (libjpeg; OpenCV cannot write it)
//   deep16.png    the same pixels as a 16-bit-per-channel PNG
//   tiny1x1.png   a 1 x 1 image
//   bomb.png, bomb.bmp, bomb.jpg   small files whose headers declare 30000 x 30000 pixels
//   truncated.jpg, truncated.png   the first half of a valid file
//   empty.jpg     zero bytes
// Usage: make_test_images SOURCE_IMAGE OUT_DIR
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <jpeglib.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace {

void Write(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string Encode(const cv::Mat& img, const char* ext) {
  std::vector<uchar> buf;
  cv::imencode(ext, img, buf);
  return std::string(buf.begin(), buf.end());
}

// CMYK JPEG as Photoshop writes it (inverted CMYK, Adobe marker), which libjpeg readers and
// OpenCV convert back to RGB.
std::string EncodeCmykJpeg(const cv::Mat& bgr) {
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  unsigned char* out = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &out, &size);
  c.image_width = static_cast<JDIMENSION>(bgr.cols);
  c.image_height = static_cast<JDIMENSION>(bgr.rows);
  c.input_components = 4;
  c.in_color_space = JCS_CMYK;
  jpeg_set_defaults(&c);
  jpeg_set_colorspace(&c, JCS_CMYK);
  c.write_Adobe_marker = TRUE;
  jpeg_set_quality(&c, 95, TRUE);
  jpeg_start_compress(&c, TRUE);
  std::vector<unsigned char> row(static_cast<size_t>(bgr.cols) * 4);
  while (c.next_scanline < c.image_height) {
    const cv::Vec3b* px = bgr.ptr<cv::Vec3b>(static_cast<int>(c.next_scanline));
    for (int x = 0; x < bgr.cols; ++x) {
      // Inverted CMYK with K = 0 (Adobe convention): stored values are 255 - ink = RGB.
      row[4 * x + 0] = px[x][2];
      row[4 * x + 1] = px[x][1];
      row[4 * x + 2] = px[x][0];
      row[4 * x + 3] = 255;
    }
    JSAMPROW rows[1] = {row.data()};
    jpeg_write_scanlines(&c, rows, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  std::string bytes(reinterpret_cast<char*>(out), size);
  free(out);
  return bytes;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: make_test_images SOURCE_IMAGE OUT_DIR\n");
    return 2;
  }
  cv::Mat src = cv::imread(argv[1], cv::IMREAD_COLOR);
  if (src.empty()) {
    std::fprintf(stderr, "make_test_images: cannot read %s\n", argv[1]);
    return 1;
  }
  const std::string dir = argv[2];
  Write(dir + "/rgb.jpg", Encode(src, ".jpg"));
  Write(dir + "/cmyk.jpg", EncodeCmykJpeg(src));
  cv::Mat deep;
  src.convertTo(deep, CV_16UC3, 257.0);
  Write(dir + "/deep16.png", Encode(deep, ".png"));
  Write(dir + "/tiny1x1.png", Encode(src(cv::Rect(0, 0, 1, 1)).clone(), ".png"));

  cv::Mat small;
  cv::resize(src, small, cv::Size(16, 16));
  std::string png = Encode(small, ".png");
  png.replace(16, 8, std::string("\0\0\x75\x30\0\0\x75\x30", 8));  // IHDR width, height
  Write(dir + "/bomb.png", png);
  std::string bmp = Encode(small, ".bmp");
  bmp.replace(18, 8, std::string("\x30\x75\0\0\x30\x75\0\0", 8));  // little-endian int32 w, h
  Write(dir + "/bomb.bmp", bmp);
  std::string jpg = Encode(small, ".jpg");
  for (size_t i = 2; i + 9 < jpg.size(); ++i) {  // SOF0 height, width
    if (static_cast<unsigned char>(jpg[i]) == 0xFF &&
        static_cast<unsigned char>(jpg[i + 1]) == 0xC0) {
      jpg.replace(i + 5, 4, std::string("\x75\x30\x75\x30", 4));
      break;
    }
  }
  Write(dir + "/bomb.jpg", jpg);

  const std::string full_jpg = Encode(src, ".jpg"), full_png = Encode(src, ".png");
  Write(dir + "/truncated.jpg", full_jpg.substr(0, full_jpg.size() / 2));
  Write(dir + "/truncated.png", full_png.substr(0, full_png.size() / 2));
  Write(dir + "/empty.jpg", "");
  return 0;
}
