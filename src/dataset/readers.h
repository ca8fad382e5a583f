// The three layout readers behind ListDataset (dataset.cc dispatches).
#pragma once

#include <cstdint>
#include <filesystem>

#include "nearlabel/dataset.h"

namespace nearlabel {

// Label root name and source root name of the AI Hub layout.
inline constexpr const char* kAiHubLabelDir = "라벨링데이터";
inline constexpr const char* kAiHubSourceDir = "원천데이터";

// Finds the directory holding 라벨링데이터 (root itself, or one level below), or "".
std::filesystem::path FindAiHubBase(const std::filesystem::path& root);

// Label JSON files and manifests larger than these are refused unread (a label is a few KB).
inline constexpr uint64_t kMaxLabelBytes = 16u << 20;
inline constexpr uint64_t kMaxManifestBytes = 1u << 30;

Status ReadAiHub(const std::filesystem::path& base, DatasetListing* out);
Status ReadFolder(const std::filesystem::path& root, DatasetListing* out);
Status ReadManifest(const std::filesystem::path& file, DatasetListing* out);

// Parses one AI Hub label file's text into `metadata` (the JSON, with `categories` added to
// every annotations[].attributes); returns the image file name it names.
Result<std::string> ParseAiHubLabel(const std::string& text,
                                    const std::vector<std::string>& categories,
                                    nlohmann::json* metadata);
// Parses a manifest's text; `file` gives the format (by extension) and the folder that
// relative image paths start from.
Status ParseManifest(const std::string& text, const std::filesystem::path& file,
                     DatasetListing* out);

// Recursively lists regular files under `dir` (following no symlinked directories twice),
// sorted, reporting unreadable directories as problems. A symlinked directory listed already
// (a loop) is reported in `skipped` when given, else among the problems.
std::vector<std::filesystem::path> ListFilesRecursive(
    const std::filesystem::path& dir, std::vector<DatasetProblem>* problems,
    std::vector<DatasetProblem>* skipped = nullptr);

}  // namespace nearlabel
