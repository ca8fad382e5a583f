#include "common/fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

namespace nearlabel {

Result<std::string> ReadFileToString(const std::string& path, uint64_t max_bytes) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (classify of a FIFO hung forever);
  // only regular files are read, and their size is checked before a byte is read (classify
  // of /dev/zero read 1 GiB before refusing it).
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return Status::NotFound("no such file: " + path);
    return Status::IOError("cannot open " + path + ": " + std::strerror(err));
  }
  std::unique_ptr<FILE, int (*)(FILE*)> f(::fdopen(fd, "rb"), &std::fclose);
  if (!f) {
    ::close(fd);
    return Status::IOError("cannot open " + path + ": " + std::strerror(errno));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    return Status::IOError("cannot stat " + path + ": " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    const char* kind = S_ISFIFO(st.st_mode)   ? "a FIFO"
                       : S_ISCHR(st.st_mode)  ? "a character device"
                       : S_ISBLK(st.st_mode)  ? "a block device"
                       : S_ISSOCK(st.st_mode) ? "a socket"
                                              : "not a regular file";
    return Status::InvalidArgument(path + " is " + kind + ", not a file (nothing was read)");
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return Status::InvalidArgument("file larger than " + std::to_string(max_bytes) +
                                   " bytes: " + path);
  }
  std::string out;
  out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f.get())) > 0) {
    if (out.size() + n > max_bytes) {  // the file grew while being read
      return Status::InvalidArgument("file larger than " + std::to_string(max_bytes) +
                                     " bytes: " + path);
    }
    out.append(buf, n);
  }
  if (std::ferror(f.get())) {
    return Status::IOError("read error in " + path + ": " + std::strerror(errno));
  }
  return out;
}

std::string LowerExtension(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  if (!ext.empty() && ext[0] == '.') ext.erase(0, 1);
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext;
}

bool IsImageExtension(const std::string& ext) {
  return ext == "jpg" || ext == "jpeg" || ext == "png" || ext == "bmp" || ext == "tif" ||
         ext == "tiff" || ext == "webp";
}

bool DirectoryWritable(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  return ::access(dir.c_str(), W_OK) == 0;
}

Status SyncPath(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) return Status::IOError("cannot open " + path + " to sync it");
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Status::IOError("fsync of " + path + " failed");
  return Status::OK();
}

std::string CommonDirectory(const std::vector<std::string>& paths) {
  std::string common;
  bool first = true;
  for (const std::string& src : paths) {
    if (src.empty() || src[0] != '/') continue;
    const std::string dir = src.substr(0, src.rfind('/') + 1);
    if (first) {
      common = dir;
      first = false;
      continue;
    }
    size_t n = 0;
    while (n < common.size() && n < dir.size() && common[n] == dir[n]) ++n;
    common.resize(common.rfind('/', n == 0 ? 0 : n - 1) + 1);
  }
  return common;
}

}  // namespace nearlabel
