// The shared datasets as the accuracy benchmarks read them (embedding_options,
// audit_label_noise, calibration): each ingested through the product's own path into a
// fresh SQLite store.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "common/sha256.h"
#include "nearlabel/dataset.h"
#include "nearlabel/ingest.h"
#include "nearlabel/model.h"
#include "nearlabel/store.h"

namespace nearlabel::bench {

struct DatasetCase {
  const char* name;
  const char* path;   // under the datasets folder
  const char* label;  // the label field
  const char* group;  // the honest protocol's group field ("" = plain leave-one-out)
};
inline constexpr DatasetCase kSharedDatasets[] = {
    {"casting", "casting", "label", ""},
    {"neu-surface-defects", "neu-surface-defects", "label", ""},
    {"magnetic-tile", "magnetic-tile/MANIFEST.tsv", "class", "tile_group"},
    {"fashion-mnist", "fashion-mnist", "label", ""},
    {"cifar-10", "cifar-10", "label", ""},
    {"caltech-101", "caltech-101", "label", ""},
};

[[noreturn]] inline void Die(const Status& st) {
  std::fprintf(stderr, "benchmark: %s\n", st.message().c_str());
  std::exit(1);
}
template <typename T>
T Take(Result<T> r) {
  if (!r.ok()) Die(r.status());
  return std::move(*r);
}

// `only` is "" or ",a,b,": whether `name` is selected.
inline bool Selected(const std::string& only, const char* name) {
  return only.empty() || only.find("," + std::string(name) + ",") != std::string::npos;
}

// $NEARLABEL_DATASETS, or "" when unset.
inline std::string DatasetsDir() {
  const char* d = std::getenv("NEARLABEL_DATASETS");
  return d ? d : "";
}

// Ingests `listing` with `card` (its embedding options applied) into a fresh store at
// dir/store.db, centres it when the card says so, and loads every row.
inline VectorTable IngestToTable(const DatasetListing& listing, const ModelCard& card,
                                 const std::string& dir) {
  auto embedder = Take(CreateEmbedder(card, EmbedderOptions{}, nullptr));
  const std::string path = dir + "/store.db";
  std::filesystem::remove(path);
  auto store = Take(OpenStore(path, Store::Mode::kCreate));
  const Status prepared =
      PrepareStoreForDataset(*store, card, Take(Sha256File(card.onnx_path)), listing);
  if (!prepared.ok()) Die(prepared);
  Take(Ingest(listing, *embedder, *store, IngestOptions{}, nullptr, nullptr));
  if (Status st = UpdateStoreCentre(*store, card, nullptr); !st.ok()) Die(st);
  return Take(store->LoadVectors(""));
}

}  // namespace nearlabel::bench
