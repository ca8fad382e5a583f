// Folder-per-class layout: <root>/<class>/.../<image>.
#include <filesystem>

#include "common/fs.h"
#include "dataset/readers.h"

namespace fs = std::filesystem;

namespace nearlabel {

Status ReadFolder(const fs::path& root, DatasetListing* out) {
  size_t class_dirs = 0;
  for (const fs::path& p : ListFilesRecursive(root, &out->problems)) {
    fs::path rel = p.lexically_relative(root);
    auto first = rel.begin();
    bool at_root = std::next(first) == rel.end();
    std::string ext = LowerExtension(p.string());
    if (at_root) {
      // README.md, MANIFEST.tsv and the like sit beside the class folders: not data.
      if (IsImageExtension(ext)) {
        out->problems.push_back({p.string(), "image outside a class folder, skipped"});
      }
      continue;
    }
    if (!IsImageExtension(ext)) {
      out->problems.push_back(
          {p.string(),
           "not an image file" + (ext.empty() ? std::string() : " (." + ext + ")") + ", skipped"});
      continue;
    }
    DatasetItem item;
    item.image_path = p.string();
    item.relative_path = rel.string();
    item.metadata = {{"label", first->string()}, {"file_name", rel.string()}};
    out->items.push_back(std::move(item));
    ++class_dirs;
  }
  if (class_dirs == 0 && out->problems.empty()) {
    return Status::NotFound("no images in class folders under " + root.string() +
                            " (expected <root>/<class>/<image>)");
  }
  return Status::OK();
}

}  // namespace nearlabel
