// How well `nearlabel audit` finds wrong labels: every shared dataset is ingested with the
// model's default embedding into a fresh SQLite store; then, on a copy of its rows with 5% of
// the labels flipped to another class at random (seeded), the share of the flipped rows among
// the audit's first 2 x (number flipped) label findings, beside the share a random ranking
// would catch (2 x 5% = 10%), the neighbour vote without the linear probe, and plain
// leave-one-out (rows whose nearest other row disagrees, nearest first). With --show N, the first N
// findings on the unmodified data. Usage:
//   build/audit_label_noise [--datasets DIR] [--model NAME] [--seed S] [--show N] [--only a,b]
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/json.h"
#include "common/sha256.h"
#include "nearlabel/audit.h"
#include "nearlabel/classify.h"
#include "nearlabel/dataset.h"
#include "nearlabel/ingest.h"
#include "nearlabel/model.h"
#include "nearlabel/store.h"
#include "shared_datasets.h"

using namespace nearlabel;
using namespace nearlabel::bench;
namespace fs = std::filesystem;

namespace {

// Flips 5% of the rows' labels to another class; returns the flipped rows.
std::set<size_t> FlipLabels(VectorTable* t, const std::string& field, uint32_t seed) {
  std::vector<std::string> classes;
  std::vector<std::string> labels;
  for (const auto& m : t->metadata) labels.push_back(MetadataField(ParseJson(m), field));
  classes = labels;
  std::sort(classes.begin(), classes.end());
  classes.erase(std::unique(classes.begin(), classes.end()), classes.end());
  std::mt19937 rng(seed);
  std::vector<size_t> order(t->size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  const size_t n = (t->size() * 5 + 50) / 100;
  std::set<size_t> flipped;
  for (size_t i = 0; i < n; ++i) {
    const size_t row = order[i];
    std::string other;
    do {
      other = classes[std::uniform_int_distribution<size_t>(0, classes.size() - 1)(rng)];
    } while (other == labels[row]);
    nlohmann::json meta = ParseJson(t->metadata[row]);
    meta[field] = other;
    t->metadata[row] = meta.dump();
    flipped.insert(row);
  }
  return flipped;
}

// Baseline: rows whose 1-NN has another label, nearest-neighbour distance ascending (the
// closer a disagreeing neighbour, the likelier the label is wrong).
std::vector<size_t> OneNnRanking(const VectorTable& t, const std::string& field) {
  EvalOptions eo;
  eo.label_field = field;
  const EvalReport r = Take(LeaveOneOut(t, eo));
  std::vector<std::pair<float, size_t>> m;
  for (const EvalCase& c : r.mismatches) m.emplace_back(c.neighbors.front().distance, c.row);
  std::sort(m.begin(), m.end());
  std::vector<size_t> out;
  for (const auto& [d, row] : m) out.push_back(row);
  return out;
}

double Recall(const std::vector<size_t>& ranked, const std::set<size_t>& flipped) {
  size_t hit = 0;
  for (size_t i = 0; i < ranked.size() && i < 2 * flipped.size(); ++i)
    hit += flipped.count(ranked[i]);
  return flipped.empty() ? 0 : static_cast<double>(hit) / flipped.size();
}

}  // namespace

int main(int argc, char** argv) {
  std::string datasets = DatasetsDir();
  std::string model = "mobilenetv2-12-int8", only;
  uint32_t seed = 1;
  int show = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--datasets")
      datasets = argv[i + 1];
    else if (a == "--model")
      model = argv[i + 1];
    else if (a == "--seed")
      seed = static_cast<uint32_t>(std::atoi(argv[i + 1]));
    else if (a == "--show")
      show = std::atoi(argv[i + 1]);
    else if (a == "--only")
      only = "," + std::string(argv[i + 1]) + ",";
    else
      Die(Status::InvalidArgument("unknown argument " + a));
  }
  if (datasets.empty()) Die(Status::InvalidArgument("set NEARLABEL_DATASETS or --datasets"));
  const ModelCard card = Take(FindModel(model, ModelSearchDirs({})));
  const std::string dir =
      fs::temp_directory_path() / ("audit_label_noise." + std::to_string(getpid()));
  fs::create_directories(dir);
  std::printf(
      "5%% of labels flipped (seed %u), %s with its card's embedding options %s; share "
      "of the flipped rows among the first 2 x flipped findings\n\n"
      "| dataset | rows | flipped | audit | the vote alone (no probe) | 1-NN disagreement "
      "(baseline) | random ranking |\n|---|---|---|---|---|---|---|\n",
      seed, model.c_str(), EmbeddingOptionsJson(card.embedding).c_str());
  for (const DatasetCase& d : kSharedDatasets) {
    if (!Selected(only, d.name)) continue;
    const auto listing = Take(ListDataset(datasets + "/" + d.path, DatasetLayout::kAuto));
    const VectorTable clean = IngestToTable(listing, card, dir);
    VectorTable noisy = clean;
    const std::set<size_t> flipped = FlipLabels(&noisy, d.label, seed);
    AuditOptions ao;
    ao.label_field = d.label;
    const AuditReport rep = Take(AuditTable(noisy, ao));
    std::vector<size_t> ranked;
    for (const LabelIssue& x : rep.label_issues) ranked.push_back(x.row);
    AuditOptions vote_only = ao;
    vote_only.probe_weight = 0;
    std::vector<size_t> vote_ranked;
    for (const LabelIssue& x : Take(AuditTable(noisy, vote_only)).label_issues) {
      vote_ranked.push_back(x.row);
    }
    std::printf("| %s | %zu | %zu | **%.1f%%** (%zu findings) | %.1f%% | %.1f%% | 10%% |\n", d.name,
                noisy.size(), flipped.size(), 100 * Recall(ranked, flipped), ranked.size(),
                100 * Recall(vote_ranked, flipped),
                100 * Recall(OneNnRanking(noisy, d.label), flipped));
    std::fflush(stdout);
    if (show > 0) {
      const AuditReport plain = Take(AuditTable(clean, ao));
      std::printf("\n  unmodified %s: %zu findings, the first %d:\n", d.name,
                  plain.label_issues.size(), show);
      for (int i = 0; i < show && i < static_cast<int>(plain.label_issues.size()); ++i) {
        const LabelIssue& x = plain.label_issues[static_cast<size_t>(i)];
        std::printf("  %2d. %s: labelled %s, neighbours say %s (p %.3f vs %.3f)\n", i + 1,
                    clean.sources[x.row].c_str(), x.label.c_str(), x.suggested.c_str(),
                    x.label_probability, x.suggested_probability);
      }
      std::printf("\n");
    }
  }
  fs::remove_all(dir);
  return 0;
}
