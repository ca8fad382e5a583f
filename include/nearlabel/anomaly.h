// Patch-level neighbours (PatchCore-style): anomaly scores from a memory bank of normal
// patches, and patch-aware classification.
//
// A model card's "patch" map gives every image grid x grid raw patch vectors (model.h).
// PatchProjector turns them into bank vectors: each position averaged with its 3x3
// neighbourhood (locally aware patches), then a fixed random Gaussian projection to a smaller
// dimension (distances are kept up to a small distortion, Johnson-Lindenstrauss). A bank keeps
// a greedy k-centre coreset of the normal images' patches; an image's anomaly score is the
// L2 distance of its worst patch to the nearest bank patch.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "nearlabel/model.h"
#include "nearlabel/status.h"
#include "nearlabel/store.h"

namespace nearlabel {

struct PatchFeatureOptions {
  bool local_average = true;  // 3x3 neighbourhood average before projecting
  int projected_dims = 128;   // 0: keep the raw dimension
  uint32_t seed = 7;          // of the projection matrix
};

// Raw patch maps -> bank vectors. Immutable after Create: thread-safe.
class PatchProjector {
 public:
  PatchProjector() = default;
  static PatchProjector Create(int raw_dims, int grid, const PatchFeatureOptions& options);
  // `raw`: grid*grid x raw_dims floats (one image, positions row-major); writes
  // grid*grid x dims() floats to `out`.
  void Apply(const float* raw, float* out) const;
  int raw_dims() const { return raw_dims_; }
  int grid() const { return grid_; }
  int dims() const { return dims_; }
  size_t patches() const { return static_cast<size_t>(grid_) * grid_; }
  bool local_average() const { return local_average_; }
  const std::vector<float>& matrix() const { return matrix_; }  // raw_dims x dims, or empty
  // Rebuilds a projector from its parts (a saved model). InvalidArgument on wrong sizes.
  static Result<PatchProjector> FromParts(int raw_dims, int grid, int dims, bool local_average,
                                          std::vector<float> matrix);

 private:
  int raw_dims_ = 0, grid_ = 0, dims_ = 0;
  bool local_average_ = true;
  std::vector<float> matrix_;
};

// Greedy k-centre coreset (Sener & Savarese; PatchCore's subsampling): `m` of the `n` rows
// (n x dims, row-major), chosen one by one as the row farthest from those chosen so far, so
// every row lies close to a chosen one. Distances are measured after a random projection to
// at most 32 dims (as PatchCore does), which keeps each of the m passes over n rows cheap.
// Returns ascending row indices; all rows when m >= n. Deterministic for a seed.
std::vector<size_t> GreedyCoreset(const float* rows, size_t n, int dims, size_t m,
                                  uint32_t seed = 1);

// For each of `nq` query rows, the L2 distance to its nearest row of `bank` (nb x dims)
// and that row's index, by blocked sgemm (|q|^2 + |b|^2 - 2 q.b). With `bank_group`
// (one key per bank row) rows whose key equals `exclude_group` are skipped; with no allowed
// row the distance is +infinity and the index nb. Thread-safe.
void NearestPatches(const float* bank, size_t nb, const float* queries, size_t nq, int dims,
                    std::vector<float>* distance, std::vector<uint32_t>* index,
                    const int32_t* bank_group = nullptr, int32_t exclude_group = -1);

struct PatchBankIndexParams {
  int m = 16;                 // graph degree
  int ef_construction = 100;  // candidate list while inserting
  int ef = 32;                // candidate list of a search (stored with the model)
};

// An HNSW graph (hnswlib, squared L2) over a bank's rows: the nearest-patch search of large
// banks, where one scan per query patch costs more than a walk (bench/patch_bank_search
// measures where). The search's candidate list (ef) is fixed when the graph is built or
// parsed. Nearest is thread-safe.
class PatchBankIndex {
 public:
  ~PatchBankIndex();
  // The graph of `rows` bank rows (row-major, dims wide), built on every core.
  static std::unique_ptr<PatchBankIndex> Build(const float* bank, size_t rows, int dims,
                                               const PatchBankIndexParams& params);
  // hnswlib's file format, as bytes.
  Result<std::string> Serialize() const;
  // Corruption when `bytes` is not a graph of `rows` rows of `dims`.
  static Result<std::unique_ptr<PatchBankIndex>> Parse(const std::string& bytes, int dims,
                                                       size_t rows, int ef);
  // For each query row, the L2 distance to the nearest bank row the walk finds (the exact
  // nearest, or a slightly farther one: the walk is approximate), on every core.
  void Nearest(const float* queries, size_t nq, std::vector<float>* distance) const;
  size_t MemoryBytes() const;

 private:
  struct Impl;
  PatchBankIndex(int dims, size_t rows);
  int dims_;
  size_t rows_;
  std::unique_ptr<Impl> impl_;
};

// Area under the ROC curve of scores where `anomalous` should score higher than `normal`
// (Mann-Whitney U, ties count half). 0.5 when either list is empty.
double Auroc(const std::vector<float>& normal, const std::vector<float>& anomalous);

// The score above which a fraction `false_alarm_rate` of `normal_scores` lies (the
// (1 - rate) quantile, linear interpolation). 0 for an empty list.
float ThresholdForFalseAlarms(std::vector<float> normal_scores, double false_alarm_rate);

// An anomaly model: the bank of normal patches and its calibrated threshold, as stored with
// the collection (Store::PutBlob under "anomaly/<name>").
struct AnomalyModel {
  std::string name = "default";
  std::string model;         // model card name the patches came from
  std::string model_sha256;  // its ONNX file
  std::string normal_where;  // SQL condition that selected the normal rows
  PatchProjector projector;
  std::vector<float> bank;  // bank_rows() x projector.dims()
  size_t patches_before_coreset = 0;
  double false_alarm_rate = 0.05;          // the rate the threshold was calibrated for
  float threshold = 0;                     // scores above it are anomalous
  std::vector<int64_t> bank_items;         // rows whose patches built the bank
  std::vector<int64_t> calibration_items;  // held-out normal rows that set the threshold
  std::vector<int64_t> test_items;         // held-out normal rows kept for `anomaly eval`
  std::vector<float> calibration_scores;
  // The graph over the bank when the bank is large enough for a walk to beat the scan
  // (AnomalyFitOptions::bank_index); null: ScoreImage scans.
  std::shared_ptr<const PatchBankIndex> bank_index;
  int bank_index_ef = 0;

  size_t bank_rows() const {
    return projector.dims() ? bank.size() / static_cast<size_t>(projector.dims()) : 0;
  }
  // Binary form: a magic line, a JSON header, then the float arrays (little-endian) and the
  // graph's bytes when there is one.
  Result<std::string> Serialize() const;
  // Corruption on anything that is not what Serialize writes.
  static Result<AnomalyModel> Parse(const std::string& bytes);
};

// Store key of an anomaly model.
std::string AnomalyModelKey(const std::string& name);

struct AnomalyScore {
  float score = 0;                  // the largest patch score
  std::vector<float> patch_scores;  // grid x grid, row-major
};

// Scores one image from its raw patch map (grid*grid x raw_dims): the nearest bank patch of each
// patch by the model's graph when it has one, else by the exact scan. Thread-safe.
AnomalyScore ScoreImage(const AnomalyModel& model, const float* raw_patches);

// A heat map of `patch_scores` (grid x grid) laid over `image` (8UC3, the model's input
// crop): bilinear upsampling, JET colours from 0 (blue) to `scale` (red, e.g. twice the
// threshold), blended half and half, with the patches above `threshold` outlined. Returns BGR.
cv::Mat HeatmapOverlay(const cv::Mat& image, const std::vector<float>& patch_scores, int grid,
                       float threshold, float scale);

// The heat map of one scored image as the patch model saw it: `image` (decoded, any size) is
// cropped and resized by `spec` (the patch card's preprocessing), then HeatmapOverlay with the
// red end at twice the model's threshold. Used by `anomaly score --heatmap`, the server's
// /v1/anomaly and the `anomaly eval --report` page, so all three draw the same picture.
cv::Mat AnomalyHeatmap(const cv::Mat& image, const PreprocessSpec& spec, const AnomalyModel& model,
                       const std::vector<float>& patch_scores);

struct AnomalyFitOptions {
  enum class BankIndex { kAuto, kHnsw, kExact };
  std::string name = "default";
  std::string normal_where;        // SQL condition selecting the normal rows (required)
  double coreset_fraction = 0.05;  // of the bank images' patches kept
  size_t coreset_max = 0;          // at most this many patches (0: no cap)
  double holdout = 0.3;            // normal rows kept out of the bank: half calibrate, half test
  double false_alarm_rate = 0.05;
  PatchFeatureOptions features;
  uint32_t seed = 1;  // of the split and the coreset's first pick
  // The bank's search: kAuto builds the graph for banks of kAutoIndexPatches or more, where
  // bench/patch_bank_search measured the walk (ef 32) 3x to 20x faster than the scan with
  // 99.6% recall@1 or more; below it the scan's gap is 1.0x to 2.3x and load-dependent, and
  // the scan is exact.
  BankIndex bank_index = BankIndex::kAuto;
  PatchBankIndexParams index_params;
  static constexpr size_t kAutoIndexPatches = 30000;
};

// One image's patch map read through a patch embedder (EmbedFiles under the hood).
struct PatchMap {
  std::string path;
  Status status;
  std::vector<float> raw;  // grid*grid x raw dims, when status is OK
};
// Patch maps of image files, in order; per-file failures are in the results.
std::vector<PatchMap> ReadPatchMaps(const std::vector<std::string>& paths,
                                    Embedder& patch_embedder);

// Fits an anomaly model on the rows matching options.normal_where, re-reading their image
// files (the stored source paths) through `patch_embedder` (made from PatchFeatureCard of
// the store's model). The rows are shuffled (seed) and split: `holdout` of them are kept out
// of the bank, half to calibrate the threshold at `false_alarm_rate`, half for
// `anomaly eval`. Unreadable files are skipped and listed in *warnings. InvalidArgument with
// fewer than 3 readable normal rows. Not thread-safe (uses the embedder).
Result<AnomalyModel> FitAnomalyModel(Store& store, Embedder& patch_embedder,
                                     const std::string& model_sha256,
                                     const AnomalyFitOptions& options,
                                     std::vector<std::string>* warnings);

// Patch-aware classification, leave-one-group-out. For every row, each patch's anomaly is its
// distance to the nearest patch of a normal row (a coreset of them) outside the row's group.
// Defect rows contribute their `votes` most anomalous patches, labelled with their class, as
// defect evidence. A query's `votes` most anomalous patches then each vote: the class of the
// nearest defect patch outside its group when that is nearer than the nearest normal patch,
// else the normal class. (A first stage that calls a row normal when its worst patch is
// below a calibrated threshold did worse on magnetic-tile: 68.6% against 69.5% at 3 votes.)
struct PatchEvalOptions {
  std::string label_field;
  std::string group_field;   // "" = leave-one-out (each row its own group)
  std::string normal_label;  // the defect-free class, e.g. "MT_Free"
  int votes = 10;
  int pool = 2;                   // average-pool the patch grid by this factor (28 -> 14)
  double coreset_fraction = 0.1;  // of the normal rows' patches
  PatchFeatureOptions features;   // projection of each patch (default 64-d here)
  PatchEvalOptions() { features.projected_dims = 64; }
};

struct PatchEvalInput {
  std::vector<std::string> labels;          // per row ("" = not evaluated, never a neighbour)
  std::vector<std::string> groups;          // per row
  std::vector<std::vector<float>> patches;  // per row: patches_per_row x dims (empty: unreadable)
  size_t patches_per_row = 0;
  int dims = 0;
};

// Projects and pools one raw patch map (grid*grid x raw dims) for PatchLeaveOneGroupOut.
std::vector<float> PoolPatches(const PatchProjector& projector, const float* raw, int pool,
                               size_t* patches_per_row);

struct PatchEvalResult {
  std::vector<std::string> predicted;  // per row ("" = not evaluated)
  std::vector<size_t> evidence_row;    // per row: the row of the nearest voting patch
  std::vector<float> evidence_distance;
};
Result<PatchEvalResult> PatchLeaveOneGroupOut(const PatchEvalInput& input,
                                              const PatchEvalOptions& options);

}  // namespace nearlabel
