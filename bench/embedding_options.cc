// Leave-one-out 1-NN accuracy of the embedding options (EmbeddingOptions) on every shared
// dataset, each against today's default in the same run: every configuration ingests each
// dataset into a fresh SQLite store through the product's own path (card, embedder, Ingest,
// UpdateStoreCentre) and evaluates it with LeaveOneOut, plain and, for magnetic-tile, by
// tile_group (its honest protocol). Usage:
//   build/embedding_options [--datasets DIR] [--model NAME] [--only a,b]
// Defaults: $NEARLABEL_DATASETS, mobilenetv2-12-int8, every dataset below.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "nearlabel/classify.h"
#include "nearlabel/collection.h"
#include "nearlabel/dataset.h"
#include "nearlabel/ingest.h"
#include "nearlabel/model.h"
#include "nearlabel/store.h"
#include "shared_datasets.h"

using namespace nearlabel;
using namespace nearlabel::bench;
namespace fs = std::filesystem;

namespace {

struct Config {
  const char* name;
  EmbeddingOptions options;
};

std::vector<Config> Configs() {
  auto make = [](const char* resize, bool flip, double power, bool centre) {
    EmbeddingOptions e;
    e.resize = resize;
    e.flip_average = flip;
    e.power = power;
    e.centre = centre;
    return e;
  };
  return {{"crop (before)", make("shorter_side_crop", false, 1, false)},
          {"direct", make("direct", false, 1, false)},
          {"flip", make("shorter_side_crop", true, 1, false)},
          {"power 0.5", make("shorter_side_crop", false, 0.5, false)},
          {"centre", make("shorter_side_crop", false, 1, true)},
          {"direct+power+centre", make("direct", false, 0.5, true)},
          {"all four", make("direct", true, 0.5, true)}};
}

// Accuracy of leave-one-out (grouped when `group` is set) on a fresh store of `listing`.
std::pair<double, double> Measure(const DatasetListing& listing, const ModelCard& base,
                                  const Config& config, const DatasetCase& d,
                                  const std::string& dir) {
  const ModelCard card = Take(WithEmbeddingOptions(base, config.options));
  const VectorTable table = IngestToTable(listing, card, dir);
  EvalOptions eval;
  eval.label_field = d.label;
  const double plain = Take(LeaveOneOut(table, eval)).accuracy;
  double grouped = -1;
  if (*d.group) {
    eval.group_field = d.group;
    grouped = Take(LeaveOneOut(table, eval)).accuracy;
  }
  return {plain, grouped};
}

}  // namespace

int main(int argc, char** argv) {
  std::string datasets = DatasetsDir();
  std::string model = "mobilenetv2-12-int8", only;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--datasets")
      datasets = argv[i + 1];
    else if (a == "--model")
      model = argv[i + 1];
    else if (a == "--only")
      only = "," + std::string(argv[i + 1]) + ",";
    else
      Die(Status::InvalidArgument("unknown argument " + a));
  }
  if (datasets.empty()) Die(Status::InvalidArgument("set NEARLABEL_DATASETS or --datasets"));
  const ModelCard base = Take(FindModel(model, ModelSearchDirs({})));
  const std::string dir =
      fs::temp_directory_path() / ("embedding_options." + std::to_string(getpid()));
  fs::create_directories(dir);
  const auto configs = Configs();
  std::printf(
      "leave-one-out 1-NN accuracy, %s; each row's first column is the default before "
      "embedding options, measured in this run\n\n| dataset |",
      model.c_str());
  for (const auto& c : configs) std::printf(" %s |", c.name);
  std::printf("\n|---|");
  for (size_t i = 0; i < configs.size(); ++i) std::printf("---|");
  std::printf("\n");
  std::vector<double> mean3(configs.size(), 0);
  for (const DatasetCase& d : kSharedDatasets) {
    if (!Selected(only, d.name)) continue;
    const DatasetListing listing = Take(ListDataset(datasets + "/" + d.path, DatasetLayout::kAuto));
    std::vector<std::pair<double, double>> acc;
    for (const auto& c : configs) acc.push_back(Measure(listing, base, c, d, dir));
    for (int grouped = 0; grouped < (*d.group ? 2 : 1); ++grouped) {
      std::printf("| %s%s |", d.name, grouped ? " by tile_group" : "");
      for (size_t i = 0; i < acc.size(); ++i) {
        const double a = grouped ? acc[i].second : acc[i].first;
        std::printf(" %.2f%% (%+.2f) |", 100 * a,
                    100 * (a - (grouped ? acc[0].second : acc[0].first)));
      }
      std::printf("\n");
      std::fflush(stdout);
    }
    const std::string n = d.name;
    if (n == "cifar-10" || n == "caltech-101" || n == "fashion-mnist") {
      for (size_t i = 0; i < acc.size(); ++i) mean3[i] += acc[i].first / 3;
    }
  }
  std::printf("| mean of cifar-10, caltech-101, fashion-mnist |");
  for (size_t i = 0; i < configs.size(); ++i) {
    std::printf(" %.2f%% (%+.2f) |", 100 * mean3[i], 100 * (mean3[i] - mean3[0]));
  }
  std::printf("\n");
  fs::remove_all(dir);
  return 0;
}
