// AnomalyModel's stored form, image scoring and the heat map.
#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include "common/json.h"
#include "common/sha256.h"
#include "nearlabel/anomaly.h"
#include "nearlabel/image.h"

namespace nearlabel {
namespace {

constexpr const char* kMagic = "NEARLABEL-ANOMALY 1\n";

void AppendFloats(std::string* out, const std::vector<float>& v) {
  out->append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

}  // namespace

std::string AnomalyModelKey(const std::string& name) { return "anomaly/" + name; }

Result<std::string> AnomalyModel::Serialize() const {
  std::string graph;
  if (bank_index) {
    NL_ASSIGN_OR_RETURN(graph, bank_index->Serialize());
  }
  nlohmann::json h = {{"name", name},
                      {"model", model},
                      {"model_sha256", model_sha256},
                      {"normal_where", normal_where},
                      {"raw_dims", projector.raw_dims()},
                      {"grid", projector.grid()},
                      {"dims", projector.dims()},
                      {"local_average", projector.local_average()},
                      {"matrix_floats", projector.matrix().size()},
                      {"bank_floats", bank.size()},
                      {"patches_before_coreset", patches_before_coreset},
                      {"false_alarm_rate", false_alarm_rate},
                      {"threshold", threshold},
                      {"bank_items", bank_items},
                      {"calibration_items", calibration_items},
                      {"test_items", test_items},
                      {"calibration_floats", calibration_scores.size()},
                      {"bank_index_bytes", graph.size()},
                      {"bank_index_sha256", graph.empty() ? "" : Sha256Hex(graph)},
                      {"bank_index_ef", bank_index_ef}};
  std::string out = kMagic;
  out += h.dump();
  out += '\n';
  AppendFloats(&out, projector.matrix());
  AppendFloats(&out, bank);
  AppendFloats(&out, calibration_scores);
  out += graph;
  return out;
}

Result<AnomalyModel> AnomalyModel::Parse(const std::string& bytes) {
  const size_t magic = std::strlen(kMagic);
  if (bytes.compare(0, magic, kMagic) != 0) {
    return Status::Corruption("not a nearlabel anomaly model (or one of a newer format)");
  }
  const size_t eol = bytes.find('\n', magic);
  if (eol == std::string::npos) return Status::Corruption("anomaly model header is truncated");
  nlohmann::json h = ParseJson(std::string_view(bytes).substr(magic, eol - magic));
  if (!h.is_object()) return Status::Corruption("anomaly model header is not JSON");
  AnomalyModel m;
  try {
    m.name = h.at("name").get<std::string>();
    m.model = h.at("model").get<std::string>();
    m.model_sha256 = h.at("model_sha256").get<std::string>();
    m.normal_where = h.at("normal_where").get<std::string>();
    m.patches_before_coreset = h.at("patches_before_coreset").get<size_t>();
    m.false_alarm_rate = h.at("false_alarm_rate").get<double>();
    m.threshold = h.at("threshold").get<float>();
    m.bank_items = h.at("bank_items").get<std::vector<int64_t>>();
    m.calibration_items = h.at("calibration_items").get<std::vector<int64_t>>();
    m.test_items = h.at("test_items").get<std::vector<int64_t>>();
    const size_t matrix_floats = h.at("matrix_floats").get<size_t>();
    const size_t bank_floats = h.at("bank_floats").get<size_t>();
    const size_t calibration_floats = h.at("calibration_floats").get<size_t>();
    // Models saved before the graph existed have neither field.
    const size_t graph_bytes = h.value("bank_index_bytes", size_t{0});
    m.bank_index_ef = h.value("bank_index_ef", 0);
    if (graph_bytes > bytes.size() - eol - 1) {
      return Status::Corruption("anomaly model data is truncated");
    }
    const size_t have = bytes.size() - eol - 1 - graph_bytes;
    if (have % sizeof(float) != 0 ||
        have / sizeof(float) != matrix_floats + bank_floats + calibration_floats ||
        matrix_floats > have || bank_floats > have) {
      return Status::Corruption("anomaly model data is truncated or has extra bytes");
    }
    std::vector<float> all(have / sizeof(float));
    std::memcpy(all.data(), bytes.data() + eol + 1, have);
    std::vector<float> matrix(all.begin(), all.begin() + static_cast<ptrdiff_t>(matrix_floats));
    m.bank.assign(all.begin() + static_cast<ptrdiff_t>(matrix_floats),
                  all.begin() + static_cast<ptrdiff_t>(matrix_floats + bank_floats));
    m.calibration_scores.assign(all.begin() + static_cast<ptrdiff_t>(matrix_floats + bank_floats),
                                all.end());
    auto p = PatchProjector::FromParts(h.at("raw_dims").get<int>(), h.at("grid").get<int>(),
                                       h.at("dims").get<int>(), h.at("local_average").get<bool>(),
                                       std::move(matrix));
    if (!p.ok()) return Status::Corruption("anomaly model: " + p.status().message());
    m.projector = std::move(*p);
    if (m.bank.size() % static_cast<size_t>(m.projector.dims()) != 0) {
      return Status::Corruption("anomaly model bank is not a whole number of patches");
    }
    if (graph_bytes > 0) {
      // hnswlib trusts the sizes and links it reads: damaged bytes must not reach it.
      const std::string graph = bytes.substr(bytes.size() - graph_bytes);
      if (Sha256Hex(graph) != h.value("bank_index_sha256", "")) {
        return Status::Corruption("anomaly model: the bank's graph does not match its checksum");
      }
      auto index = PatchBankIndex::Parse(graph, m.projector.dims(), m.bank_rows(), m.bank_index_ef);
      if (!index.ok()) return Status::Corruption("anomaly model: " + index.status().message());
      m.bank_index = std::move(*index);
    }
  } catch (const nlohmann::json::exception& e) {
    return Status::Corruption(std::string("anomaly model header: ") + e.what());
  }
  return m;
}

AnomalyScore ScoreImage(const AnomalyModel& model, const float* raw_patches) {
  const PatchProjector& p = model.projector;
  std::vector<float> projected(p.patches() * static_cast<size_t>(p.dims()));
  p.Apply(raw_patches, projected.data());
  AnomalyScore s;
  if (model.bank_index) {
    model.bank_index->Nearest(projected.data(), p.patches(), &s.patch_scores);
  } else {
    NearestPatches(model.bank.data(), model.bank_rows(), projected.data(), p.patches(), p.dims(),
                   &s.patch_scores, nullptr);
  }
  s.score = s.patch_scores.empty()
                ? 0.f
                : *std::max_element(s.patch_scores.begin(), s.patch_scores.end());
  return s;
}

cv::Mat HeatmapOverlay(const cv::Mat& image, const std::vector<float>& patch_scores, int grid,
                       float threshold, float scale) {
  cv::Mat scores(grid, grid, CV_32F, const_cast<float*>(patch_scores.data()));
  cv::Mat levels;
  scores.convertTo(levels, CV_8U, 255.0 / std::max(scale, 1e-6f));  // saturates above `scale`
  cv::Mat big;
  cv::resize(levels, big, image.size(), 0, 0, cv::INTER_LINEAR);
  cv::Mat colours;
  cv::applyColorMap(big, colours, cv::COLORMAP_JET);
  cv::Mat out;
  cv::addWeighted(image, 0.5, colours, 0.5, 0, out);
  // Outline the patches over the threshold so the verdict's evidence is visible.
  cv::Mat over = scores > threshold;
  cv::Mat mask;
  cv::resize(over, mask, image.size(), 0, 0, cv::INTER_NEAREST);
  std::vector<std::vector<cv::Point>> contours;
  cv::findContours(mask, contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_SIMPLE);
  cv::drawContours(out, contours, -1, cv::Scalar(255, 255, 255), 2);
  return out;
}

cv::Mat AnomalyHeatmap(const cv::Mat& image, const PreprocessSpec& spec, const AnomalyModel& model,
                       const std::vector<float>& patch_scores) {
  return HeatmapOverlay(ResizeAndCrop(image, spec), patch_scores, model.projector.grid(),
                        model.threshold, 2 * model.threshold);
}

}  // namespace nearlabel
