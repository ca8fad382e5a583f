// OpenCV DNN backend of Embedder: reads the ONNX file, runs the network up to the card's
// feature layer, mean-pools spatial positions and L2-normalises.
#include <thread>

#include <opencv2/core/utility.hpp>
#include <opencv2/dnn.hpp>

#include "common/fs.h"
#include "embed/embedding_transform.h"
#include "embed/pooling.h"
#include "nearlabel/model.h"

namespace nearlabel {
namespace {

class OpenCvEmbedder : public Embedder {
 public:
  OpenCvEmbedder(ModelCard card, cv::dnn::Net net, std::string layer)
      : card_(std::move(card)), net_(std::move(net)), layer_(std::move(layer)) {}

  const ModelCard& card() const override { return card_; }
  int max_batch() const override { return card_.max_batch > 0 ? card_.max_batch : 32; }
  std::string backend() const override { return "opencv-dnn"; }

  Status Embed(const float* input, int count, float* output) override {
    if (count <= 0) return Status::OK();
    if (count > max_batch()) {
      return Status::InvalidArgument("batch of " + std::to_string(count) + " exceeds " +
                                     std::to_string(max_batch()));
    }
    const auto& p = card_.preprocess;
    int shape[4] = {count, 3, p.height, p.width};
    cv::Mat blob(4, shape, CV_32F, const_cast<float*>(input));  // setInput copies it
    cv::Mat out;
    try {
      net_.setInput(blob, card_.input_name);
      out = net_.forward(layer_);
    } catch (const cv::Exception& e) {
      return Status::Internal("OpenCV DNN forward failed for " + card_.name + ": " + e.err);
    }
    return Pool(out, count, output);
  }

 private:
  // out is [N, C] or [N, C, H, W]; writes N x dims normalised vectors.
  Status Pool(const cv::Mat& out, int count, float* output) const {
    if (out.dims < 2 || out.size[0] != count || out.type() != CV_32F) {
      return Status::Mismatch("feature layer " + layer_ + " has an unexpected shape");
    }
    const int channels = out.size[1];
    if (channels != card_.dims) {
      return Status::Mismatch("model card " + card_.name + " says dims " +
                              std::to_string(card_.dims) + " but layer " + layer_ + " has " +
                              std::to_string(channels) + " channels");
    }
    size_t spatial = 1;
    for (int i = 2; i < out.dims; ++i) spatial *= out.size[i];
    if (card_.pooling == "none" && spatial != 1) {
      return Status::Mismatch("feature layer " + layer_ + " is spatial but pooling is none");
    }
    MeanPoolAndNormalize(out.ptr<float>(), count, channels, spatial, output);
    return Status::OK();
  }

  ModelCard card_;
  cv::dnn::Net net_;
  std::string layer_;
};

}  // namespace

Result<std::unique_ptr<Embedder>> CreateOpenCvEmbedder(const ModelCard& card,
                                                       const EmbedderOptions& options) {
  if (card.pooling == "patches") {
    return Status::Unsupported("patch features of " + card.name +
                               " need the ONNX Runtime backend (--backend onnxruntime)");
  }
  NL_ASSIGN_OR_RETURN(std::string bytes, ReadModelFile(card));
  int threads =
      options.threads > 0 ? options.threads : static_cast<int>(std::thread::hardware_concurrency());
  cv::setNumThreads(std::max(1, threads));
  cv::dnn::Net net;
  try {
    net = cv::dnn::readNetFromONNX(bytes.data(), bytes.size());
  } catch (const cv::Exception& e) {
    return Status::Corruption("OpenCV cannot load " + card.onnx_path + ": " + e.err);
  }
  if (net.empty())
    return Status::Corruption("OpenCV loaded an empty network from " + card.onnx_path);
  net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
  net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
  std::string layer =
      card.feature_opencv_layer.empty() ? card.feature_onnx_tensor : card.feature_opencv_layer;
  if (net.getLayerId(layer) < 0) {
    // Graph outputs are addressed by their tensor name, which getLayerId does not know.
    bool is_output = false;
    for (const auto& o : net.getUnconnectedOutLayersNames()) is_output |= o == layer;
    if (!is_output) {
      return Status::NotFound("feature layer '" + layer + "' of model card " + card.card_path +
                              " is not in " + card.onnx_path +
                              " (OpenCV layer names look like onnx_node!<node>)");
    }
  }
  auto embedder = std::make_unique<OpenCvEmbedder>(card, std::move(net), layer);
  // A probe run checks the feature layer's width against the card now, not mid-ingest.
  const auto& p = card.preprocess;
  std::vector<float> probe(static_cast<size_t>(3) * p.width * p.height, 0.f);
  std::vector<float> out(card.dims);
  NL_RETURN_IF_ERROR(embedder->Embed(probe.data(), 1, out.data()));
  return ApplyEmbeddingOptions(std::move(embedder));
}

}  // namespace nearlabel
