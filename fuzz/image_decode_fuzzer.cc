// libFuzzer target: image bytes through what ingest's prepare stage and the server do with
// them: decode (with the size check before decoding), preprocess for the default model's
// input, and the thumbnail.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "nearlabel/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  // A lower pixel limit than the product's keeps each run fast; the code path is the same.
  auto img = nearlabel::DecodeImage(bytes, 4'000'000);
  if (!img.ok()) return 0;
  if (img->type() != CV_8UC3 || img->empty()) __builtin_trap();
  nearlabel::PreprocessSpec spec;  // the ImageNet models' spec (224, shorter side 256, crop)
  std::vector<float> tensor(3u * spec.width * spec.height);
  nearlabel::PreprocessInto(*img, spec, tensor.data());
  spec.resize = nearlabel::PreprocessSpec::Resize::kDirect;
  nearlabel::PreprocessInto(*img, spec, tensor.data());
  if (nearlabel::EncodeThumbnail(*img).empty()) __builtin_trap();
  return 0;
}
