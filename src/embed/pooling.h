// Feature pooling shared by the embedder backends.
#pragma once

#include <cstddef>

namespace nearlabel {

// `src` holds `count` feature maps of `channels` x `spatial` floats (NCHW with H*W =
// spatial). Writes `count` x `channels` floats to `out`: each channel's mean over the spatial
// positions, then each vector scaled to unit L2 length (a zero vector stays zero).
void MeanPoolAndNormalize(const float* src, int count, int channels, size_t spatial, float* out);

}  // namespace nearlabel

namespace nearlabel {

// `src` holds `count` feature maps of `channels` x `spatial` floats (NCHW). Writes them
// channels-last, `count` x `spatial` x `channels`: one vector per position (patch).
void ChannelsLast(const float* src, int count, int channels, size_t spatial, float* out);

}  // namespace nearlabel
