#include "embed/pooling.h"

#include <cmath>

namespace nearlabel {

void MeanPoolAndNormalize(const float* src, int count, int channels, size_t spatial, float* out) {
  for (int n = 0; n < count; ++n) {
    float* v = out + static_cast<size_t>(n) * channels;
    double norm2 = 0;
    for (int c = 0; c < channels; ++c) {
      const float* s = src + (static_cast<size_t>(n) * channels + c) * spatial;
      double acc = 0;
      for (size_t k = 0; k < spatial; ++k) acc += s[k];
      v[c] = static_cast<float>(acc / static_cast<double>(spatial));
      norm2 += static_cast<double>(v[c]) * v[c];
    }
    const float inv = norm2 > 0 ? static_cast<float>(1.0 / std::sqrt(norm2)) : 0.f;
    for (int c = 0; c < channels; ++c) v[c] *= inv;
  }
}

}  // namespace nearlabel

namespace nearlabel {

void ChannelsLast(const float* src, int count, int channels, size_t spatial, float* out) {
  const size_t c_count = static_cast<size_t>(channels);
  for (int n = 0; n < count; ++n) {
    const float* map = src + static_cast<size_t>(n) * c_count * spatial;
    float* dst = out + static_cast<size_t>(n) * c_count * spatial;
    for (size_t c = 0; c < c_count; ++c) {
      for (size_t s = 0; s < spatial; ++s) dst[s * c_count + c] = map[c * spatial + s];
    }
  }
}

}  // namespace nearlabel
