// Manifest layout: CSV/TSV with a header row, or JSON Lines; paths relative to the manifest.
#include <filesystem>
#include <sstream>

#include "common/csv.h"
#include "common/fs.h"
#include "common/json.h"
#include "dataset/readers.h"

namespace fs = std::filesystem;

namespace nearlabel {
namespace {

const char* const kPathColumns[] = {"path", "file", "file_name", "filename", "image", "filepath"};

void AddItem(const fs::path& base, const std::string& manifest, size_t line,
             const std::string& path_value, nlohmann::json metadata, DatasetListing* out) {
  std::string where = manifest + ":" + std::to_string(line);
  if (path_value.empty()) {
    out->problems.push_back({where, "empty image path"});
    return;
  }
  fs::path p = fs::path(path_value).is_absolute() ? fs::path(path_value) : base / path_value;
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) {
    out->problems.push_back({where, "image not found: " + p.string()});
    return;
  }
  DatasetItem item;
  item.image_path = p.string();
  item.relative_path = path_value;
  item.metadata = std::move(metadata);
  out->items.push_back(std::move(item));
}

}  // namespace

Status ReadManifest(const fs::path& file, DatasetListing* out) {
  NL_ASSIGN_OR_RETURN(std::string text, ReadFileToString(file.string(), kMaxManifestBytes));
  return ParseManifest(text, file, out);
}

Status ParseManifest(const std::string& text, const fs::path& file, DatasetListing* out) {
  const fs::path base = file.parent_path();
  const std::string ext = LowerExtension(file.string());
  if (ext == "jsonl") {
    std::istringstream in(text);
    std::string line;
    size_t n = 0;
    while (std::getline(in, line)) {
      ++n;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      bool too_deep = false;
      nlohmann::json j = ParseJson(line, &too_deep);
      std::string where = file.string() + ":" + std::to_string(n);
      if (too_deep) {
        out->problems.push_back({where, JsonTooDeepMessage()});
        continue;
      }
      if (j.is_discarded() || !j.is_object()) {
        out->problems.push_back({where, "line is not a JSON object"});
        continue;
      }
      std::string path;
      for (const char* key : kPathColumns) {
        auto it = j.find(key);
        if (it != j.end() && it->is_string()) {
          path = it->get<std::string>();
          break;
        }
      }
      AddItem(base, file.string(), n, path, std::move(j), out);
    }
    return Status::OK();
  }
  char sep = ext == "tsv" ? '\t' : ',';
  NL_ASSIGN_OR_RETURN(auto rows, ParseCsv(text, sep));
  if (rows.empty()) return Status::InvalidArgument("manifest is empty: " + file.string());
  const auto& header = rows[0];
  int path_col = -1;
  for (const char* key : kPathColumns) {
    for (size_t c = 0; c < header.size() && path_col < 0; ++c) {
      if (header[c] == key) path_col = static_cast<int>(c);
    }
  }
  if (path_col < 0) {
    return Status::InvalidArgument("manifest " + file.string() +
                                   " has no path column (path, file, file_name, image)");
  }
  for (size_t r = 1; r < rows.size(); ++r) {
    const auto& row = rows[r];
    if (row.size() != header.size()) {
      out->problems.push_back({file.string() + ":" + std::to_string(r + 1),
                               "row has " + std::to_string(row.size()) + " fields, header has " +
                                   std::to_string(header.size())});
      continue;
    }
    nlohmann::json meta = nlohmann::json::object();
    for (size_t c = 0; c < row.size(); ++c) meta[header[c]] = row[c];
    AddItem(base, file.string(), r + 1, row[path_col], std::move(meta), out);
  }
  return Status::OK();
}

}  // namespace nearlabel
