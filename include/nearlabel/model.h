// Model cards and embedders.
//
// A model card is a small JSON file next to an ONNX file that says how to feed the model and
// which tensor holds the image feature:
//   {
//     "name": "mobilenetv2-12-int8",              // how users and stores refer to it
//     "file": "mobilenetv2-12-int8.onnx",         // ONNX file, relative to the card or a models
//     dir "sha256": "cc02...",                        // optional; checked when present "input":
//     {"name": "input", "width": 224, "height": 224, "max_batch": 0},  // 0: dynamic "preprocess":
//     {"resize": "shorter_side_crop" | "direct", "resize_shorter": 256,
//                    "interpolation": "linear" | "area" | "cubic" | "nearest",
//                    "channel_order": "RGB" | "BGR", "scale": 0.00392156862745098,
//                    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
//     "feature": {"onnx_tensor": "627", "opencv_layer": "onnx_node!627_DequantizeLinear",
//                 "pooling": "mean" | "none", "dims": 1280}
//   }
// mean and std are in the tensor's channel order and apply after scale.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nearlabel/image.h"
#include "nearlabel/status.h"

namespace nearlabel {

struct ModelCard {
  std::string name;
  std::string description;
  std::string file;    // as written in the card
  std::string sha256;  // expected checksum of the ONNX file, "" if not given
  std::string input_name;
  int max_batch = 0;  // 0: any batch size
  PreprocessSpec preprocess;
  std::string feature_onnx_tensor;   // ONNX tensor name of the feature
  std::string feature_opencv_layer;  // OpenCV DNN layer name of the same tensor
  std::string pooling = "mean";      // "mean": average over spatial positions; "none"
  int dims = 0;
  std::string card_path;  // where the card was read from
  std::string onnx_path;  // resolved ONNX file ("" if it was not found)
};

// Parses a card. `card_path` is used for messages and to resolve `file`. Thread-safe.
Result<ModelCard> ParseModelCard(const std::string& json_text, const std::string& card_path);

// Where models are looked for: the directories in NEARLABEL_MODELS (colon-separated) or
// `override_dirs` when non-empty, then the built-in card directory.
std::vector<std::string> ModelSearchDirs(const std::vector<std::string>& override_dirs);
std::string BuiltinCardsDir();

// Finds a model by name (a card <dir>/<name>/<name>.card.json, <dir>/<name>/card.json,
// <dir>/<name>.card.json in the search dirs) or by path (an .onnx with <stem>.card.json or
// card.json beside it, or a card file), and resolves its ONNX file (beside the card, else
// <dir>/<name>/<file> or <dir>/<file>). Fails with NotFound listing where it looked.
Result<ModelCard> FindModel(const std::string& name_or_path, const std::vector<std::string>& dirs);

// All cards in the search dirs (a name found twice is listed once, first wins).
std::vector<ModelCard> ListModels(const std::vector<std::string>& dirs,
                                  std::vector<std::string>* errors);

// Turns preprocessed images into L2-normalised feature vectors.
// Not thread-safe: use one Embedder per thread.
class Embedder {
 public:
  virtual ~Embedder() = default;
  virtual const ModelCard& card() const = 0;
  // Length of each output vector.
  int dims() const { return card().dims; }
  // Largest batch Embed accepts (>= 1).
  virtual int max_batch() const = 0;
  // Backend name for messages ("opencv-dnn").
  virtual std::string backend() const = 0;
  // `input` holds `count` images of 3 x height x width floats (PreprocessInto layout);
  // writes count x dims() unit-length floats to `output`. count <= max_batch().
  virtual Status Embed(const float* input, int count, float* output) = 0;
};

struct EmbedderOptions {
  int threads = 0;  // 0: the number of cores
};

// OpenCV DNN backend. Checks the ONNX checksum when the card has one, loads the network and
// runs one probe image to verify that the feature layer exists and has `dims` channels.
Result<std::unique_ptr<Embedder>> CreateOpenCvEmbedder(const ModelCard& card,
                                                       const EmbedderOptions& options);

}  // namespace nearlabel
