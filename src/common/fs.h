// File helpers shared by readers, the store and the CLI.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nearlabel/status.h"

namespace nearlabel {

// Reads a whole file. Fails with NotFound / IOError naming the path. `max_bytes` guards
// against reading something absurd into memory by mistake.
Result<std::string> ReadFileToString(const std::string& path, uint64_t max_bytes = (1ull << 31));

// Lowercased extension without the dot ("jpg"), or "" if none.
std::string LowerExtension(const std::string& path);

// True for extensions nearlabel decodes: jpg jpeg png bmp tif tiff webp.
bool IsImageExtension(const std::string& ext);

// Whether new files can be made beside `path` (false on a read-only filesystem: a backup,
// an NFS export, a container volume).
bool DirectoryWritable(const std::string& path);

// fsync of a file or (with `directory`) a directory, so a rename in it is durable.
Status SyncPath(const std::string& path, bool directory);

// The directory every absolute path in `paths` shares, with its trailing '/' ("" when
// none); other entries (uploads "upload:...", relative paths) are ignored. A server answers
// sources relative to it, so a client learns the dataset's layout, not the file system.
std::string CommonDirectory(const std::vector<std::string>& paths);

}  // namespace nearlabel
