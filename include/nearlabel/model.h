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
//                 "pooling": "mean" | "none", "dims": 1280},
//     "patch": {"onnx_tensor": "591_quantized", "dims": 576, "grid": 14,   // optional
//               "resize": "direct"},
//     "embedding": {"resize": "direct", "flip_average": true, "power": 0.5,
//                   "centre": true}  // optional
//   }
// mean and std are in the tensor's channel order and apply after scale. "patch" names a
// mid-level feature map (dims x grid x grid) whose positions are the image's patches, for
// anomaly scores and patch-aware classification; a quantized (uint8) tensor is dequantized
// with its producer's scale and zero point. Its "resize" (optional) overrides the
// preprocessing's, e.g. "direct" so that patches cover the whole image, not a centre crop.
// "embedding" (optional) gives the EmbeddingOptions a new store gets (see below).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nearlabel/image.h"
#include "nearlabel/status.h"

namespace nearlabel {

// How a store turns the model's feature into its vectors, beyond the card's preprocessing.
// Recorded in the store (CollectionInfo::embedding) when it is created, and applied to every
// image embedded for it afterwards, so queries and rows always share one space.
struct EmbeddingOptions {
  // "shorter_side_crop" or "direct" (the whole image squeezed to the input size); "" keeps
  // the card's "preprocess" resize.
  std::string resize;
  // Embeds each image and its mirror image and averages the two unit vectors (twice the
  // inference work).
  bool flip_average = false;
  // Every feature value x becomes sign(x) |x|^power before the final normalisation
  // ("power normalisation"; 1 = none). Within (0, 1].
  double power = 1;
  // Subtracts the store's mean vector and normalises again (SimpleShot's CL2N), which
  // spreads the vectors of a store whose images all look alike. The mean is the store's
  // (CollectionInfo::centre): computed by the first ingest, again whenever the rows have
  // doubled since (UpdateStoreCentre), and applied to queries as to rows.
  bool centre = false;
  bool operator==(const EmbeddingOptions& o) const {
    return resize == o.resize && flip_average == o.flip_average && power == o.power &&
           centre == o.centre;
  }
};

// The canonical JSON of `e` (sorted keys; what stores record), and its parser.
// ParseEmbeddingOptions: InvalidArgument naming `where` for an unknown key or a bad value.
std::string EmbeddingOptionsJson(const EmbeddingOptions& e);
Result<EmbeddingOptions> ParseEmbeddingOptions(const std::string& json_text,
                                               const std::string& where);

struct ModelCard {
  std::string name;
  std::string description;
  std::string file;    // as written in the card
  std::string sha256;  // expected checksum of the ONNX file, "" if not given
  std::string input_name;
  int max_batch = 0;  // 0: any batch size
  // Images per inference run of one ONNX Runtime session (a batch is split over the sessions,
  // and each session's share runs this many at a time); 0: the backend's default (4). Large
  // models whose activations outgrow the core's cache run faster one image at a time.
  int run_batch = 0;
  PreprocessSpec preprocess;
  std::string feature_onnx_tensor;   // ONNX tensor name of the feature
  std::string feature_opencv_layer;  // OpenCV DNN layer name of the same tensor
  std::string pooling = "mean";      // "mean": average over spatial positions; "none"
  int dims = 0;
  // Patch feature map ("" when the card has none); see the card format above.
  std::string patch_onnx_tensor;
  int patch_dims = 0;
  int patch_grid = 0;  // positions per side
  PreprocessSpec patch_preprocess;
  // What the embedder applies (flip averaging, power) and what preprocess.resize was set
  // from; the card's "embedding" section, or a store's options (WithEmbeddingOptions).
  EmbeddingOptions embedding;
  // With embedding.centre: the mean subtracted after normalising (dims floats), empty while
  // the store has none yet (its rows are then stored uncentred, as queries are embedded).
  std::vector<float> centre_mean;
  std::string preprocess_resize;  // the "preprocess" section's resize, as written
  std::string card_path;          // where the card was read from
  std::string onnx_path;          // resolved ONNX file ("" if it was not found)
};

// Parses a card. `card_path` is used for messages and to resolve `file`. Thread-safe.
Result<ModelCard> ParseModelCard(const std::string& json_text, const std::string& card_path);

// The card that reads `card`'s patch feature map: pooling "patches", dims = patch_dims,
// preprocess = patch_preprocess. An Embedder made from it writes, per image, grid x grid
// patch vectors of dims floats, row-major by position (y, x), neither pooled nor normalised.
// InvalidArgument when the card has no "patch" section.
Result<ModelCard> PatchFeatureCard(const ModelCard& card);

// `card` with `e` applied: preprocess.resize set from e.resize ("" = the "preprocess"
// section's) and e as its embedding. InvalidArgument for a resize name or power out of range.
Result<ModelCard> WithEmbeddingOptions(const ModelCard& card, const EmbeddingOptions& e);

// Where models are looked for: the directories in NEARLABEL_MODELS (colon-separated) or
// `override_dirs` when non-empty, then the built-in card directory.
std::vector<std::string> ModelSearchDirs(const std::vector<std::string>& override_dirs);
std::string BuiltinCardsDir();

// Finds a model by name (a card <dir>/<name>/<name>.card.json, <dir>/<name>/card.json,
// <dir>/<name>.card.json in the search dirs) or by path (an .onnx with <stem>.card.json or
// card.json beside it, or a card file), and resolves its ONNX file (beside the card, else
// <dir>/<name>/<file> or <dir>/<file>). Fails with NotFound listing where it looked.
Result<ModelCard> FindModel(const std::string& name_or_path, const std::vector<std::string>& dirs);

// The bytes of the card's ONNX file, checked against the card's sha256 when it has one
// (Mismatch names both checksums). NotFound when the card has no resolved file.
Result<std::string> ReadModelFile(const ModelCard& card);

// All cards in the search dirs (a name found twice is listed once, first wins).
std::vector<ModelCard> ListModels(const std::vector<std::string>& dirs,
                                  std::vector<std::string>* errors);

// Turns preprocessed images into L2-normalised feature vectors.
// Not thread-safe (use one Embedder per thread), except EmbedOnLane on different lanes.
class Embedder {
 public:
  virtual ~Embedder() = default;
  virtual const ModelCard& card() const = 0;
  // Length of each output vector.
  int dims() const { return card().dims; }
  // Floats Embed writes per image: dims(), or grid x grid x dims() for a patch card.
  size_t floats_per_image() const {
    const auto& c = card();
    return static_cast<size_t>(c.dims) *
           (c.pooling == "patches" ? static_cast<size_t>(c.patch_grid) * c.patch_grid : 1);
  }
  // Largest batch Embed accepts (>= 1).
  virtual int max_batch() const = 0;
  // Backend name for messages ("opencv-dnn").
  virtual std::string backend() const = 0;
  // `input` holds `count` images of 3 x height x width floats (PreprocessInto layout);
  // writes count x dims() unit-length floats to `output` (count x floats_per_image() raw
  // patch features for a patch card). count <= max_batch().
  virtual Status Embed(const float* input, int count, float* output) = 0;

  // Lanes: parts of the embedder that embed at the same time, each on its own thread (ONNX
  // Runtime: one per session; others: one). A pipeline that feeds every lane on its own
  // thread keeps all of them busy, where Embed waits at the end of each batch for its slowest
  // part. EmbedOnLane(lane, ...) calls for different lanes may run concurrently; calls on one
  // lane must not overlap each other nor overlap Embed. Same input and output as Embed;
  // count <= lane_batch() (the images one lane runs at once).
  virtual int lanes() const { return 1; }
  virtual int lane_batch() const { return max_batch(); }
  virtual Status EmbedOnLane(int lane, const float* input, int count, float* output) {
    (void)lane;
    return Embed(input, count, output);
  }
};

// Inference engines. Both read the same model card and give the same features (cosine
// >= 0.999 per image on the shared models; a test checks it).
enum class Backend {
  kAuto,         // ONNX Runtime when its library loads, else OpenCV DNN (with a notice)
  kOnnxRuntime,  // ONNX Runtime, loaded at run time; fails when the library is missing
  kOpenCv,       // OpenCV DNN
};
const char* BackendName(Backend b);
// "auto", "onnxruntime" (or "ort"), "opencv". InvalidArgument otherwise.
Result<Backend> ParseBackend(const std::string& name);

struct EmbedderOptions {
  Backend backend = Backend::kAuto;
  int threads = 0;  // inference threads; 0: the number of cores
  // ONNX Runtime only: sessions that run parts of a batch in parallel, threads / sessions
  // threads each; 0: one session per thread.
  int sessions = 0;
  int max_batch = 0;  // largest batch per run; 0: the backend's default (model limits apply)
  // ONNX Runtime only: images per session run (ModelCard::run_batch); 0: the card's value.
  int run_batch = 0;
  // ONNX Runtime only: let idle worker threads spin between operators. Slightly faster when
  // inference runs alone; in the ingest pipeline spinning takes the cores decoding needs.
  bool spin_wait = false;
};

// Creates the embedder `options.backend` asks for. With kAuto and no ONNX Runtime library,
// falls back to OpenCV DNN and sets *notice (may be null) to a one-line explanation. Any
// other failure (checksum, missing feature tensor, dims, an ORT version outside the supported
// range) is an error, never a silent fallback.
Result<std::unique_ptr<Embedder>> CreateEmbedder(const ModelCard& card,
                                                 const EmbedderOptions& options,
                                                 std::string* notice);

// OpenCV DNN backend. Checks the ONNX checksum when the card has one, loads the network and
// runs one probe image to verify that the feature layer exists and has `dims` channels.
Result<std::unique_ptr<Embedder>> CreateOpenCvEmbedder(const ModelCard& card,
                                                       const EmbedderOptions& options);

// ONNX Runtime backend. Loads the library (see OnnxRuntimeInfo), checks the checksum, makes
// the card's feature tensor the graph's only output (pruning the rest), checks the input
// name, type and size against the card, and runs a probe image to check dims.
Result<std::unique_ptr<Embedder>> CreateOnnxRuntimeEmbedder(const ModelCard& card,
                                                            const EmbedderOptions& options);

// The ONNX Runtime library this process uses: $ONNXRUNTIME_LIB when set, else the copy the
// build found (the npm package onnxruntime-node installed by scripts/setup.sh), else
// libonnxruntime.so.1 on the loader's path. Loaded once; thread-safe. Fails with NotFound
// when no library loads and Unsupported when its version is outside [kOrtMinVersion, 2.0).
struct OnnxRuntimeInfo {
  std::string path;
  std::string version;
};
Result<OnnxRuntimeInfo> LoadOnnxRuntime();
constexpr const char* kOrtMinVersion = "1.14.0";

}  // namespace nearlabel
