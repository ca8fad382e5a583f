// EmbeddingOptions applied around a backend: flip averaging and power normalisation.
#include <algorithm>
#include <cmath>
#include <vector>

#include "embed/embedding_transform.h"

namespace nearlabel {
namespace {

// Wraps a backend embedder; the card it reports is the wrapped one's (whose `embedding` says
// what this applies).
class TransformingEmbedder : public Embedder {
 public:
  explicit TransformingEmbedder(std::unique_ptr<Embedder> inner) : inner_(std::move(inner)) {}
  const ModelCard& card() const override { return inner_->card(); }
  int max_batch() const override { return inner_->max_batch(); }
  std::string backend() const override { return inner_->backend(); }

  int lanes() const override { return inner_->lanes(); }
  int lane_batch() const override { return inner_->lane_batch(); }

  Status Embed(const float* input, int count, float* output) override {
    return Transform(input, count, output, whole_,
                     [&](const float* in, float* out) { return inner_->Embed(in, count, out); });
  }
  Status EmbedOnLane(int lane, const float* input, int count, float* output) override {
    if (lane < 0 || lane >= lanes()) return inner_->EmbedOnLane(lane, input, count, output);
    return Transform(input, count, output, per_lane_[lane], [&](const float* in, float* out) {
      return inner_->EmbedOnLane(lane, in, count, out);
    });
  }

 private:
  struct Buffers {
    std::vector<float> mirrored, flipped;  // reused between calls
  };

  // `embed(in, out)` runs the backend on `count` images.
  template <typename EmbedFn>
  Status Transform(const float* input, int count, float* output, Buffers& buf, EmbedFn embed) {
    const EmbeddingOptions& e = card().embedding;
    NL_RETURN_IF_ERROR(embed(input, output));
    const size_t d = static_cast<size_t>(dims());
    if (e.flip_average) {
      const PreprocessSpec& p = card().preprocess;
      const size_t floats = 3 * static_cast<size_t>(p.width) * p.height;
      buf.mirrored.resize(floats * count);
      MirrorImages(input, count, p.width, p.height, buf.mirrored.data());
      buf.flipped.resize(d * count);
      NL_RETURN_IF_ERROR(embed(buf.mirrored.data(), buf.flipped.data()));
      for (size_t i = 0; i < d * count; ++i) output[i] += buf.flipped[i];
    }
    const std::vector<float>& mean = card().centre_mean;
    for (int i = 0; i < count; ++i) {
      float* v = output + d * i;
      PowerNormalize(v, d, e.power);
      if (mean.size() == d) {
        for (size_t k = 0; k < d; ++k) v[k] -= mean[k];
        PowerNormalize(v, d, 1);
      }
    }
    return Status::OK();
  }

  std::unique_ptr<Embedder> inner_;
  Buffers whole_;
  std::vector<Buffers> per_lane_ = std::vector<Buffers>(inner_->lanes());
};

}  // namespace

void MirrorImages(const float* src, int count, int width, int height, float* dst) {
  const size_t rows = static_cast<size_t>(count) * 3 * height;
  for (size_t r = 0; r < rows; ++r) {
    const float* in = src + r * width;
    std::reverse_copy(in, in + width, dst + r * width);
  }
}

void PowerNormalize(float* v, size_t dims, double power) {
  if (power != 1) {
    const float p = static_cast<float>(power);
    for (size_t i = 0; i < dims; ++i) v[i] = std::copysign(std::pow(std::fabs(v[i]), p), v[i]);
  }
  double norm = 0;
  for (size_t i = 0; i < dims; ++i) norm += static_cast<double>(v[i]) * v[i];
  if (norm <= 0) return;  // a zero vector stays zero, as the backends leave it
  const float scale = static_cast<float>(1 / std::sqrt(norm));
  for (size_t i = 0; i < dims; ++i) v[i] *= scale;
}

std::unique_ptr<Embedder> ApplyEmbeddingOptions(std::unique_ptr<Embedder> backend) {
  const EmbeddingOptions& e = backend->card().embedding;
  if (backend->card().pooling == "patches" ||
      (!e.flip_average && e.power == 1 && backend->card().centre_mean.empty())) {
    return backend;
  }
  return std::make_unique<TransformingEmbedder>(std::move(backend));
}

}  // namespace nearlabel
