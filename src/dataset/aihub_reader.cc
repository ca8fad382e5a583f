// AI Hub layout: one JSON label per image under 라벨링데이터, images under 원천데이터.
// Images are found through one index of file names built up front (never a directory walk
// per label), preferring the image whose folder mirrors the label's folder.
#include <filesystem>
#include <map>
#include <set>
#include <system_error>

#include "common/fs.h"
#include "common/json.h"
#include "dataset/readers.h"

namespace fs = std::filesystem;

namespace nearlabel {

fs::path FindAiHubBase(const fs::path& root) {
  std::error_code ec;
  if (fs::is_directory(root / kAiHubLabelDir, ec)) return root;
  fs::directory_iterator it(root, fs::directory_options::skip_permission_denied, ec);
  if (ec) return {};
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) break;
    if (it->is_directory(ec) && fs::is_directory(it->path() / kAiHubLabelDir, ec)) {
      return it->path();
    }
  }
  return {};
}

Result<std::string> ParseAiHubLabel(const std::string& text,
                                    const std::vector<std::string>& categories,
                                    nlohmann::json* metadata) {
  bool too_deep = false;
  nlohmann::json j = ParseJson(text, &too_deep);
  if (too_deep) return Status::InvalidArgument(JsonTooDeepMessage());
  if (j.is_discarded()) return Status::InvalidArgument("unreadable JSON (syntax error)");
  if (!j.is_object()) return Status::InvalidArgument("label JSON is not an object");
  auto images = j.find("images");
  if (images == j.end() || !images->is_array() || images->empty() || !(*images)[0].is_object()) {
    return Status::InvalidArgument("label JSON has no images[0]");
  }
  auto name = (*images)[0].find("file_name");
  if (name == (*images)[0].end() || !name->is_string() || name->get<std::string>().empty()) {
    return Status::InvalidArgument("label JSON has no images[0].file_name string");
  }
  auto anns = j.find("annotations");
  if (anns == j.end() || !anns->is_array() || anns->empty()) {
    return Status::InvalidArgument("label JSON has no annotations[]");
  }
  for (auto& ann : *anns) {
    if (!ann.is_object()) return Status::InvalidArgument("annotations[] holds a non-object");
    auto& attrs = ann["attributes"];
    if (attrs.is_null()) attrs = nlohmann::json::object();
    if (!attrs.is_object())
      return Status::InvalidArgument("annotations[].attributes is not an object");
    attrs["categories"] = categories;
  }
  std::string file_name = name->get<std::string>();
  *metadata = std::move(j);
  return file_name;
}

Status ReadAiHub(const fs::path& base, DatasetListing* out) {
  const fs::path label_root = base / kAiHubLabelDir;
  const fs::path source_root = base / kAiHubSourceDir;
  std::error_code ec;
  if (!fs::is_directory(source_root, ec)) {
    return Status::NotFound(std::string("no ") + kAiHubSourceDir + " folder next to " +
                            label_root.string());
  }
  // file name -> image paths (relative to the source root) carrying that name.
  std::map<std::string, std::vector<fs::path>> by_name;
  for (const fs::path& p : ListFilesRecursive(source_root, &out->problems)) {
    by_name[p.filename().string()].push_back(p.lexically_relative(source_root));
  }
  std::set<fs::path> used;
  for (const fs::path& label : ListFilesRecursive(label_root, &out->problems)) {
    if (LowerExtension(label.string()) != "json") {
      out->problems.push_back({label.string(), "not a .json label file, skipped"});
      continue;
    }
    fs::path rel_dir = label.parent_path().lexically_relative(label_root);
    std::vector<std::string> categories;
    for (const auto& part : rel_dir) {
      if (part != ".") categories.push_back(part.string());
    }
    auto text = ReadFileToString(label.string(), kMaxLabelBytes);
    if (!text.ok()) {
      out->problems.push_back({label.string(), text.status().message()});
      continue;
    }
    nlohmann::json metadata;
    auto file_name = ParseAiHubLabel(*text, categories, &metadata);
    if (!file_name.ok()) {
      out->problems.push_back({label.string(), file_name.status().message()});
      continue;
    }
    // A file_name may carry folders; match on its last component.
    std::string leaf = fs::path(*file_name).filename().string();
    auto it = by_name.find(leaf);
    if (it == by_name.end()) {
      out->problems.push_back(
          {label.string(), "label points at a missing image '" + *file_name + "'"});
      continue;
    }
    const fs::path* chosen = nullptr;
    for (const fs::path& cand : it->second) {
      if (cand.parent_path() == rel_dir) chosen = &cand;
    }
    if (chosen == nullptr && it->second.size() == 1) chosen = &it->second[0];
    if (chosen == nullptr) {
      out->problems.push_back({label.string(), "image name '" + leaf + "' is ambiguous: " +
                                                   std::to_string(it->second.size()) +
                                                   " images carry it in other folders"});
      continue;
    }
    if (!used.insert(*chosen).second) {
      out->problems.push_back(
          {label.string(), "image '" + chosen->string() + "' is already named by another label"});
      continue;
    }
    DatasetItem item;
    item.image_path = (source_root / *chosen).string();
    item.relative_path = (fs::path(kAiHubSourceDir) / *chosen).string();
    item.metadata = std::move(metadata);
    out->items.push_back(std::move(item));
  }
  for (const auto& [name, paths] : by_name) {
    for (const fs::path& p : paths) {
      if (!used.count(p)) {
        out->problems.push_back({(source_root / p).string(), "image has no label JSON, skipped"});
      }
    }
  }
  return Status::OK();
}

}  // namespace nearlabel
