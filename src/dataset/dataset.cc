#include <algorithm>
#include <filesystem>
#include <set>
#include <system_error>

#include "common/fs.h"
#include "dataset/readers.h"

namespace fs = std::filesystem;

namespace nearlabel {

Result<DatasetLayout> ParseDatasetLayout(const std::string& name) {
  if (name == "auto") return DatasetLayout::kAuto;
  if (name == "aihub") return DatasetLayout::kAiHub;
  if (name == "folder") return DatasetLayout::kFolder;
  if (name == "manifest") return DatasetLayout::kManifest;
  return Status::InvalidArgument("unknown layout '" + name +
                                 "' (expected auto, aihub, folder or manifest)");
}

const char* DatasetLayoutName(DatasetLayout layout) {
  switch (layout) {
    case DatasetLayout::kAuto:
      return "auto";
    case DatasetLayout::kAiHub:
      return "aihub";
    case DatasetLayout::kFolder:
      return "folder";
    case DatasetLayout::kManifest:
      return "manifest";
  }
  return "?";
}

std::vector<fs::path> ListFilesRecursive(const fs::path& dir, std::vector<DatasetProblem>* problems,
                                         std::vector<DatasetProblem>* skipped) {
  std::vector<fs::path> files;
  std::set<fs::path> seen_dirs;  // canonical paths, to survive symlink loops
  // Real directories are listed before symlinked ones, so that a folder reached both ways
  // keeps its own path (and so its class), whatever the names sort like.
  std::vector<fs::path> stack{dir}, linked;
  while (!stack.empty() || !linked.empty()) {
    const bool via_link = stack.empty();
    fs::path d = via_link ? linked.back() : stack.back();
    (via_link ? linked : stack).pop_back();
    std::error_code ec;
    fs::path canon = fs::canonical(d, ec);
    if (ec) {
      problems->push_back({d.string(), "cannot resolve directory: " + ec.message()});
      continue;
    }
    if (!seen_dirs.insert(canon).second) {
      (skipped ? skipped : problems)
          ->push_back({d.string(),
                       "symlink to a directory listed already (" + canon.string() + "), skipped"});
      continue;
    }
    fs::directory_iterator it(d, fs::directory_options::skip_permission_denied, ec);
    if (ec) {
      problems->push_back({d.string(), "cannot list directory: " + ec.message()});
      continue;
    }
    for (; it != fs::directory_iterator(); it.increment(ec)) {
      if (ec) {
        problems->push_back({d.string(), "error while listing: " + ec.message()});
        break;
      }
      const fs::path& p = it->path();
      if (p.filename().string()[0] == '.') continue;  // hidden files: .DS_Store, .git
      std::error_code sec;
      if (it->is_directory(sec)) {
        (it->is_symlink(sec) || via_link ? linked : stack).push_back(p);
      } else if (it->is_regular_file(sec)) {
        files.push_back(p);
      } else if (!it->exists(sec)) {
        problems->push_back({p.string(), "dangling symlink, skipped"});
      }
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

Result<DatasetListing> ListDataset(const std::string& root_arg, DatasetLayout layout) {
  std::error_code ec;
  fs::path root = fs::absolute(root_arg, ec);
  if (ec || !fs::exists(root, ec)) return Status::NotFound("dataset not found: " + root_arg);
  root = root.lexically_normal();
  if (root.has_filename() == false) root = root.parent_path();
  DatasetListing out;
  out.root = root.string();
  bool is_file = fs::is_regular_file(root, ec);
  if (layout == DatasetLayout::kAuto) {
    std::string ext = LowerExtension(root.string());
    if (is_file && (ext == "csv" || ext == "tsv" || ext == "jsonl")) {
      layout = DatasetLayout::kManifest;
    } else if (is_file) {
      return Status::InvalidArgument("dataset " + root_arg +
                                     " is a file but not a .csv/.tsv/.jsonl manifest");
    } else if (!FindAiHubBase(root).empty()) {
      layout = DatasetLayout::kAiHub;
    } else {
      layout = DatasetLayout::kFolder;
    }
  }
  out.layout = layout;
  switch (layout) {
    case DatasetLayout::kManifest:
      if (!is_file) return Status::InvalidArgument("manifest layout needs a file: " + root_arg);
      NL_RETURN_IF_ERROR(ReadManifest(root, &out));
      break;
    case DatasetLayout::kAiHub: {
      fs::path base = FindAiHubBase(root);
      if (base.empty()) {
        return Status::NotFound(std::string("no ") + kAiHubLabelDir + " folder in " + root_arg);
      }
      NL_RETURN_IF_ERROR(ReadAiHub(base, &out));
      break;
    }
    case DatasetLayout::kFolder:
      if (is_file) return Status::InvalidArgument("folder layout needs a directory: " + root_arg);
      NL_RETURN_IF_ERROR(ReadFolder(root, &out));
      break;
    case DatasetLayout::kAuto:
      break;
  }
  // Metadata is stored with every row and read by every query: a label of megabytes is a
  // mistake (or an attack), refused per item rather than stored.
  std::vector<DatasetItem> kept;
  for (DatasetItem& item : out.items) {
    const size_t bytes =
        item.metadata.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).size();
    if (bytes > kMaxMetadataBytes) {
      out.problems.push_back({item.image_path, "label metadata of " + std::to_string(bytes) +
                                                   " bytes is over the limit of " +
                                                   std::to_string(kMaxMetadataBytes)});
    } else {
      kept.push_back(std::move(item));
    }
  }
  out.items = std::move(kept);
  std::sort(out.items.begin(), out.items.end(),
            [](const DatasetItem& a, const DatasetItem& b) { return a.image_path < b.image_path; });
  return out;
}

ImageFileList ListImageFiles(const std::vector<std::string>& args) {
  ImageFileList out;
  for (const std::string& arg : args) {
    std::error_code ec;
    const fs::file_status st = fs::status(arg, ec);
    if (ec || !fs::exists(st)) {
      out.problems.push_back({arg, ec && ec != std::errc::no_such_file_or_directory
                                       ? "cannot read: " + ec.message()
                                       : "no such file or directory"});
    } else if (!fs::is_directory(st)) {
      out.paths.push_back(arg);
    } else {
      std::vector<DatasetProblem> listing_problems;
      for (const fs::path& p : ListFilesRecursive(arg, &listing_problems, &out.skipped)) {
        if (IsImageExtension(LowerExtension(p.string()))) out.paths.push_back(p.string());
      }
      out.problems.insert(out.problems.end(), listing_problems.begin(), listing_problems.end());
    }
  }
  return out;
}

std::string MetadataField(const nlohmann::json& metadata, const std::string& field) {
  const nlohmann::json* v = nullptr;
  if (!metadata.is_object()) return "";
  if (!field.empty() && field[0] == '/') {
    try {
      nlohmann::json::json_pointer ptr(field);
      if (metadata.contains(ptr)) v = &metadata.at(ptr);
    } catch (const nlohmann::json::exception&) {
      return "";
    }
  } else {
    auto it = metadata.find(field);
    if (it != metadata.end()) {
      v = &*it;
    } else {
      auto ann = metadata.find("annotations");
      if (ann != metadata.end() && ann->is_array() && !ann->empty() && (*ann)[0].is_object()) {
        auto attrs = (*ann)[0].find("attributes");
        if (attrs != (*ann)[0].end() && attrs->is_object()) {
          auto f = attrs->find(field);
          if (f != attrs->end()) v = &*f;
        }
      }
    }
  }
  if (v == nullptr || v->is_null()) return "";
  if (v->is_string()) return v->get<std::string>();
  return v->dump();
}

}  // namespace nearlabel
