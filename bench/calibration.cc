// Expected calibration error of classify's confidence under leave-one-out on every shared
// dataset (ingested with the model card's embedding options): the vote's share (classify's
// confidence before calibration; k = 5, majority vote, classify's defaults) against the
// calibrated probability (a temperature and floor fitted on the other half of the rows;
// Calibration). magnetic-tile also by tile_group. Usage:
//   build/calibration [--datasets DIR] [--model NAME] [--k K] [--only a,b]
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "nearlabel/classify.h"
#include "shared_datasets.h"

using namespace nearlabel;
using namespace nearlabel::bench;
namespace fs = std::filesystem;

int main(int argc, char** argv) {
  std::string datasets = DatasetsDir(), model = "mobilenetv2-12-int8", only;
  int k = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--datasets") {
      datasets = argv[i + 1];
    } else if (a == "--model") {
      model = argv[i + 1];
    } else if (a == "--k") {
      k = std::atoi(argv[i + 1]);
    } else if (a == "--only") {
      only = "," + std::string(argv[i + 1]) + ",";
    } else {
      Die(Status::InvalidArgument("unknown argument " + a));
    }
  }
  if (datasets.empty()) Die(Status::InvalidArgument("set NEARLABEL_DATASETS or --datasets"));
  const ModelCard card = Take(FindModel(model, ModelSearchDirs({})));
  const std::string dir = fs::temp_directory_path() / ("calibration." + std::to_string(getpid()));
  fs::create_directories(dir);
  std::printf(
      "leave-one-out, k = %d, majority vote, %s %s; ECE over 10 bins\n\n"
      "| dataset | accuracy | ECE of the vote's share (before) | ECE calibrated | mean "
      "confidence before / after | temperature, floor |\n|---|---|---|---|---|---|\n",
      k, model.c_str(), EmbeddingOptionsJson(card.embedding).c_str());
  size_t met = 0, total = 0;
  for (const DatasetCase& d : kSharedDatasets) {
    if (!Selected(only, d.name)) continue;
    const auto listing = Take(ListDataset(datasets + "/" + d.path, DatasetLayout::kAuto));
    const VectorTable table = IngestToTable(listing, card, dir);
    for (int grouped = 0; grouped < (*d.group ? 2 : 1); ++grouped) {
      EvalOptions eo;
      eo.label_field = d.label;
      eo.k = k;
      if (grouped) eo.group_field = d.group;
      const EvalReport r = Take(LeaveOneOut(table, eo));
      double before = 0, after = 0;
      for (double c : r.vote_confidence) before += c / r.vote_confidence.size();
      for (double c : r.calibrated_confidence) after += c / r.calibrated_confidence.size();
      std::printf("| %s%s | %.2f%% | %.4f | **%.4f** | %.3f / %.3f | %.3g, %.3g |\n", d.name,
                  grouped ? " by tile_group" : "", 100 * r.accuracy, r.vote_reliability.ece,
                  r.calibrated_reliability.ece, before, after, r.calibration.temperature,
                  r.calibration.floor);
      std::fflush(stdout);
      if (!grouped) {
        ++total;
        met += r.calibrated_reliability.ece <= 0.05;
      }
    }
  }
  std::printf("\ncalibrated ECE <= 0.05 on %zu of %zu datasets (plain leave-one-out)\n", met,
              total);
  fs::remove_all(dir);
  return 0;
}
