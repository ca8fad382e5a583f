// The three layout readers behind ListDataset (dataset.cc dispatches).
#pragma once

#include <filesystem>

#include "nearlabel/dataset.h"

namespace nearlabel {

// Label root name and source root name of the AI Hub layout.
inline constexpr const char* kAiHubLabelDir = "라벨링데이터";
inline constexpr const char* kAiHubSourceDir = "원천데이터";

// Finds the directory holding 라벨링데이터 (root itself, or one level below), or "".
std::filesystem::path FindAiHubBase(const std::filesystem::path& root);

Status ReadAiHub(const std::filesystem::path& base, DatasetListing* out);
Status ReadFolder(const std::filesystem::path& root, DatasetListing* out);
Status ReadManifest(const std::filesystem::path& file, DatasetListing* out);

// Recursively lists regular files under `dir` (following no symlinked directories twice),
// sorted, reporting unreadable directories as problems.
std::vector<std::filesystem::path> ListFilesRecursive(const std::filesystem::path& dir,
                                                      std::vector<DatasetProblem>* problems);

}  // namespace nearlabel
