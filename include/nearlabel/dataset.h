// Dataset readers: turn a labelled dataset on disk into a list of (image file, label
// metadata). Three layouts:
//   aihub    <root>/라벨링데이터/<quality>/<part>/<id>.json next to <root>/원천데이터/.../<file>;
//            the JSON is kept whole, with the folder names below the label root added as
//            annotations[*].attributes.categories.
//   folder   <root>/<class>/.../<image>; metadata {"label": <class>, "file_name": <relative path>}.
//   manifest a .csv, .tsv or .jsonl file: one row per image, a path column (path, file,
//            file_name, image or filepath), every other column becomes a metadata field.
// Readers never stop at a bad entry: each problem is reported with its path and reason.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nearlabel/status.h"

namespace nearlabel {

enum class DatasetLayout { kAuto, kAiHub, kFolder, kManifest };

// Parses "auto", "aihub", "folder" or "manifest".
Result<DatasetLayout> ParseDatasetLayout(const std::string& name);
const char* DatasetLayoutName(DatasetLayout layout);

// Largest label metadata (as JSON text) stored with a row; larger items become problems.
inline constexpr size_t kMaxMetadataBytes = 1u << 20;

struct DatasetItem {
  std::string image_path;     // path of the image file, usable with fopen
  std::string relative_path;  // the image path relative to the dataset root, for display
  nlohmann::json metadata;    // label metadata, stored as the row's metadata
};

struct DatasetProblem {
  std::string path;    // the file the problem is about
  std::string reason;  // one line
};

struct DatasetListing {
  DatasetLayout layout = DatasetLayout::kAuto;  // the layout actually read
  std::string root;                             // the dataset root (absolute)
  std::vector<DatasetItem> items;               // in a stable (sorted) order
  std::vector<DatasetProblem> problems;
};

// Lists `root` (a directory, or a manifest file). kAuto picks manifest for a .csv/.tsv/.jsonl
// file, aihub when a 라벨링데이터 folder is found at the root or one level below, else folder.
// Fails only when the dataset as a whole cannot be read (missing root, unreadable manifest).
// Thread-safe (no shared state).
Result<DatasetListing> ListDataset(const std::string& root, DatasetLayout layout);

// Image files to classify, search or score, named by `args` (the CLI's arguments and --from
// lines): a file is taken as given, whatever its extension (a bad one fails when it is read);
// a directory is walked recursively with the readers' rules (image extensions only, hidden
// entries skipped, a directory reached twice through symlinks listed once and reported in
// `skipped`), its files sorted.
// A missing path or an unlistable directory becomes a problem; the rest are still listed.
// Thread-safe (no shared state).
struct ImageFileList {
  std::vector<std::string> paths;        // in argument order, each directory's files sorted
  std::vector<DatasetProblem> problems;  // missing paths, unreadable directories
  std::vector<DatasetProblem> skipped;   // symlinked directories listed already (loops)
};
ImageFileList ListImageFiles(const std::vector<std::string>& args);

// The value of label field `field` in `metadata`: a top-level key, else
// annotations[0].attributes.<field> (AI Hub), else a JSON pointer when `field` starts with
// '/'. Strings are returned as is; numbers and booleans as their JSON text; missing or null
// gives "".
std::string MetadataField(const nlohmann::json& metadata, const std::string& field);

}  // namespace nearlabel
