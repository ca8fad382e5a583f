// The card's EmbeddingOptions around a backend embedder (flip averaging, power).
#pragma once

#include <memory>

#include "nearlabel/model.h"

namespace nearlabel {

// `backend` as is when its card's embedding options ask for nothing it does not already do
// (or it is a patch card); otherwise wrapped so that Embed averages each image's vector with
// its mirror image's and applies the power before normalising. Same thread-safety as backend.
std::unique_ptr<Embedder> ApplyEmbeddingOptions(std::unique_ptr<Embedder> backend);

// Mirrors `count` images of 3 x height x width floats left to right into dst.
void MirrorImages(const float* src, int count, int width, int height, float* dst);

// v[i] = sign(v[i]) |v[i]|^power, then v scaled to unit length (a zero vector stays zero).
void PowerNormalize(float* v, size_t dims, double power);

}  // namespace nearlabel
