// Fitting an anomaly model: split the normal rows, embed their patches, coreset, calibrate.
#include <algorithm>
#include <cmath>
#include <random>

#include "nearlabel/anomaly.h"
#include "nearlabel/ingest.h"

namespace nearlabel {

std::vector<PatchMap> ReadPatchMaps(const std::vector<std::string>& paths,
                                    Embedder& patch_embedder) {
  std::vector<PatchMap> out;
  out.reserve(paths.size());
  for (EmbeddedFile& f : EmbedFiles(paths, patch_embedder)) {
    out.push_back({std::move(f.path), std::move(f.status), std::move(f.embedding)});
  }
  return out;
}

Result<AnomalyModel> FitAnomalyModel(Store& store, Embedder& patch_embedder,
                                     const std::string& model_sha256,
                                     const AnomalyFitOptions& options,
                                     std::vector<std::string>* warnings) {
  const ModelCard& card = patch_embedder.card();
  if (options.normal_where.empty()) {
    return Status::InvalidArgument("--normal is required: an SQL condition selecting normal rows");
  }
  if (!(options.holdout > 0 && options.holdout < 1)) {
    return Status::InvalidArgument("--holdout must be between 0 and 1 (exclusive)");
  }
  if (!(options.coreset_fraction > 0 && options.coreset_fraction <= 1)) {
    return Status::InvalidArgument("--coreset must be within (0, 1]");
  }
  NL_ASSIGN_OR_RETURN(VectorTable rows, store.LoadVectors(options.normal_where));
  if (rows.size() < 3) {
    return Status::InvalidArgument("--normal selects " + std::to_string(rows.size()) +
                                   " rows; at least 3 are needed (bank, calibration, test)");
  }
  // Read every normal image once, then split the readable ones.
  std::vector<PatchMap> maps = ReadPatchMaps(rows.sources, patch_embedder);
  std::vector<size_t> readable;
  for (size_t i = 0; i < maps.size(); ++i) {
    if (maps[i].status.ok()) {
      readable.push_back(i);
    } else if (warnings) {
      warnings->push_back(maps[i].path + ": " + maps[i].status.message());
    }
  }
  if (readable.size() < 3) {
    return Status::InvalidArgument("only " + std::to_string(readable.size()) + " of " +
                                   std::to_string(rows.size()) +
                                   " normal images could be read; at least 3 are needed");
  }
  std::mt19937 rng(options.seed);
  std::shuffle(readable.begin(), readable.end(), rng);
  size_t held = static_cast<size_t>(std::lround(options.holdout * readable.size()));
  held = std::clamp<size_t>(held, 2, readable.size() - 1);
  const size_t calibration = (held + 1) / 2;
  std::vector<size_t> bank_rows(readable.begin() + static_cast<ptrdiff_t>(held), readable.end());
  std::vector<size_t> cal_rows(readable.begin(),
                               readable.begin() + static_cast<ptrdiff_t>(calibration));
  std::vector<size_t> test_rows(readable.begin() + static_cast<ptrdiff_t>(calibration),
                                readable.begin() + static_cast<ptrdiff_t>(held));
  std::sort(bank_rows.begin(), bank_rows.end());
  std::sort(cal_rows.begin(), cal_rows.end());
  std::sort(test_rows.begin(), test_rows.end());

  AnomalyModel m;
  m.name = options.name;
  m.model = card.name;
  m.model_sha256 = model_sha256;
  m.normal_where = options.normal_where;
  m.false_alarm_rate = options.false_alarm_rate;
  m.projector = PatchProjector::Create(card.dims, card.patch_grid, options.features);
  const size_t per_image = m.projector.patches() * static_cast<size_t>(m.projector.dims());
  std::vector<float> all(bank_rows.size() * per_image);
  for (size_t b = 0; b < bank_rows.size(); ++b) {
    m.projector.Apply(maps[bank_rows[b]].raw.data(), all.data() + b * per_image);
    m.bank_items.push_back(rows.ids[bank_rows[b]]);
  }
  for (size_t r : cal_rows) m.calibration_items.push_back(rows.ids[r]);
  for (size_t r : test_rows) m.test_items.push_back(rows.ids[r]);

  const size_t n = bank_rows.size() * m.projector.patches();
  size_t keep = static_cast<size_t>(std::ceil(options.coreset_fraction * static_cast<double>(n)));
  if (options.coreset_max > 0) keep = std::min(keep, options.coreset_max);
  keep = std::max<size_t>(keep, 1);
  m.patches_before_coreset = n;
  const int dims = m.projector.dims();
  if (keep >= n) {
    m.bank = std::move(all);
  } else {
    for (size_t i : GreedyCoreset(all.data(), n, dims, keep, options.seed)) {
      m.bank.insert(m.bank.end(), all.begin() + static_cast<ptrdiff_t>(i * dims),
                    all.begin() + static_cast<ptrdiff_t>((i + 1) * dims));
    }
  }
  const bool graph = options.bank_index == AnomalyFitOptions::BankIndex::kHnsw ||
                     (options.bank_index == AnomalyFitOptions::BankIndex::kAuto &&
                      m.bank_rows() >= AnomalyFitOptions::kAutoIndexPatches);
  if (graph) {
    // Built before calibrating, so the threshold comes from the search that scores later.
    m.bank_index = PatchBankIndex::Build(m.bank.data(), m.bank_rows(), dims, options.index_params);
    m.bank_index_ef = options.index_params.ef;
  }
  for (size_t r : cal_rows) m.calibration_scores.push_back(ScoreImage(m, maps[r].raw.data()).score);
  m.threshold = ThresholdForFalseAlarms(m.calibration_scores, options.false_alarm_rate);
  return m;
}

}  // namespace nearlabel
