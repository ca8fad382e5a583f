// VectorSegment: the memory-mapped search copy of a store's vectors (format in ARCHITECTURE.md,
// "Vector segment"). Layout, little-endian:
//   [0, 4096)        header (SegmentHeader, then zeros)
//   [4096, ...)      rows x dims float32, row-major, ascending id
//   (8-aligned)      rows x int64 ids, ascending
//   then             one CRC-32 (zlib) per 1 MiB chunk of the bytes from 4096 to here
// The vectors come first so that Write can stream them and keep only the ids in memory.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/crash_point.h"
#include "common/fs.h"
#include "nearlabel/segment.h"

namespace nearlabel {
namespace {

constexpr char kMagic[16] = "NEARLABEL-VEC\n";
constexpr uint32_t kVersion = 1;
constexpr uint64_t kHeaderBytes = 4096;
constexpr uint64_t kChunkBytes = uint64_t{1} << 20;

struct SegmentHeader {
  char magic[16];
  uint32_t version;
  uint32_t dims;
  uint64_t rows;
  int64_t change_id;
  char store_id[48];  // NUL-terminated
  uint64_t vectors_offset;
  uint64_t ids_offset;
  uint64_t crc_offset;
  uint64_t chunk_bytes;
  uint64_t file_bytes;
  uint32_t header_crc;  // CRC-32 of every byte above
  uint32_t reserved;
};
static_assert(sizeof(SegmentHeader) <= kHeaderBytes, "header fits its page");

uint32_t HeaderCrc(const SegmentHeader& h) {
  return static_cast<uint32_t>(
      crc32_z(0, reinterpret_cast<const Bytef*>(&h), offsetof(SegmentHeader, header_crc)));
}

uint64_t IdsOffset(uint64_t rows, uint32_t dims) {
  return (kHeaderBytes + rows * dims * sizeof(float) + 7) / 8 * 8;
}

// Buffered sequential writes that checksum each chunk of the body as it passes.
class ChunkedWriter {
 public:
  explicit ChunkedWriter(int fd) : fd_(fd) { buf_.reserve(kBuffer); }
  Status Append(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const size_t room = kChunkBytes - in_chunk_;
      const size_t take = std::min(n, room);
      crc_ = crc32_z(crc_, reinterpret_cast<const Bytef*>(p), take);
      buf_.insert(buf_.end(), p, p + take);
      in_chunk_ += take;
      p += take;
      n -= take;
      if (in_chunk_ == kChunkBytes) EndChunk();
      if (buf_.size() >= kBuffer) NL_RETURN_IF_ERROR(Flush());
    }
    return Status::OK();
  }
  Status Pad(uint64_t to) {
    static const char zeros[8] = {};
    return Append(zeros, static_cast<size_t>(to - offset()));
  }
  uint64_t offset() const { return kHeaderBytes + written_ + buf_.size(); }
  // Ends the checksummed body; the checksums follow it.
  Status Finish() {
    if (in_chunk_ > 0) EndChunk();
    NL_RETURN_IF_ERROR(Flush());
    return WriteAll(crcs_.data(), crcs_.size() * sizeof(uint32_t));
  }

 private:
  static constexpr size_t kBuffer = 8 << 20;
  void EndChunk() {
    crcs_.push_back(static_cast<uint32_t>(crc_));
    crc_ = 0;
    in_chunk_ = 0;
  }
  Status Flush() {
    NL_RETURN_IF_ERROR(WriteAll(buf_.data(), buf_.size()));
    written_ += buf_.size();
    buf_.clear();
    return Status::OK();
  }
  Status WriteAll(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0)
        return Status::IOError(std::string("writing the vector segment: ") +
                               std::strerror(w < 0 ? errno : ENOSPC));
      p += w;
      n -= static_cast<size_t>(w);
    }
    return Status::OK();
  }
  int fd_;
  std::vector<char> buf_;
  uint64_t written_ = 0;
  uLong crc_ = 0;
  uint64_t in_chunk_ = 0;
  std::vector<uint32_t> crcs_;
};

Status WriteBody(int fd, int dims, const std::string& store_id,
                 const VectorSegment::RowSource& rows, SegmentHeader* h) {
  if (::lseek(fd, static_cast<off_t>(kHeaderBytes), SEEK_SET) < 0) {
    return Status::IOError(std::string("seeking in the vector segment: ") + std::strerror(errno));
  }
  ChunkedWriter w(fd);
  std::vector<int64_t> ids;
  const size_t row_bytes = static_cast<size_t>(dims) * sizeof(float);
  NL_ASSIGN_OR_RETURN(
      int64_t change_id, rows([&](int64_t id, const float* v) -> Status {
        if (!ids.empty() && id <= ids.back()) {
          return Status::Internal("segment rows out of order at id " + std::to_string(id));
        }
        ids.push_back(id);
        return w.Append(v, row_bytes);
      }));
  const uint64_t ids_offset = IdsOffset(ids.size(), static_cast<uint32_t>(dims));
  NL_RETURN_IF_ERROR(w.Pad(ids_offset));
  NL_RETURN_IF_ERROR(w.Append(ids.data(), ids.size() * sizeof(int64_t)));
  const uint64_t crc_offset = w.offset();
  NL_RETURN_IF_ERROR(w.Finish());
  std::memset(h, 0, sizeof *h);
  std::memcpy(h->magic, kMagic, sizeof kMagic);
  h->version = kVersion;
  h->dims = static_cast<uint32_t>(dims);
  h->rows = ids.size();
  h->change_id = change_id;
  std::snprintf(h->store_id, sizeof h->store_id, "%s", store_id.c_str());
  h->vectors_offset = kHeaderBytes;
  h->ids_offset = ids_offset;
  h->crc_offset = crc_offset;
  h->chunk_bytes = kChunkBytes;
  h->file_bytes = crc_offset + (crc_offset - kHeaderBytes + kChunkBytes - 1) / kChunkBytes * 4;
  h->header_crc = HeaderCrc(*h);
  std::vector<char> page(kHeaderBytes, 0);
  std::memcpy(page.data(), h, sizeof *h);
  if (::pwrite(fd, page.data(), page.size(), 0) != static_cast<ssize_t>(page.size())) {
    return Status::IOError(std::string("writing the vector segment header: ") +
                           std::strerror(errno));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != h->file_bytes) {
    return Status::IOError("the vector segment stopped short of " + std::to_string(h->file_bytes) +
                           " bytes (disk full?)");
  }
  if (::fsync(fd) != 0) {
    return Status::IOError(std::string("fsync of the vector segment: ") + std::strerror(errno));
  }
  return Status::OK();
}

}  // namespace

VectorSegment::~VectorSegment() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
}

// Removes temporary files of writers that were killed (".NAME.tmp-PID" of a dead PID).
static void RemoveDeadWritersFiles(const std::string& dir, const std::string& name) {
  namespace fs = std::filesystem;
  const std::string prefix = "." + name + ".tmp-";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string f = e.path().filename().string();
    if (f.rfind(prefix, 0) != 0) continue;
    const long pid = std::atol(f.c_str() + prefix.size());
    if (pid > 0 && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM)) continue;
    fs::remove(e.path(), ec);
  }
}

Status VectorSegment::Write(const std::string& path, int dims, const std::string& store_id,
                            const RowSource& rows) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const std::string dir = target.has_parent_path() ? target.parent_path().string() : ".";
  RemoveDeadWritersFiles(dir, target.filename().string());
  const std::string tmp =
      dir + "/." + target.filename().string() + ".tmp-" + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return Status::IOError("cannot write the vector segment " + tmp + ": " + std::strerror(errno));
  }
  SegmentHeader h;
  Status st = WriteBody(fd, dims, store_id, rows, &h);
  ::close(fd);
  std::error_code ec;
  if (!st.ok()) {
    fs::remove(tmp, ec);
    return st.WithContext("writing " + path + " (left as it was)");
  }
  CrashPoint("segment-write:synced");
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return Status::IOError("renaming " + tmp + " to " + path + ": " + ec.message());
  }
  return SyncPath(dir, true);
}

Result<std::unique_ptr<VectorSegment>> VectorSegment::Map(const std::string& path, int dims) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::NotFound("no vector segment " + path);
    return Status::IOError("cannot open " + path + ": " + std::strerror(errno));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::Corruption(path + " is not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < kHeaderBytes) {
    ::close(fd);
    return Status::Corruption("vector segment " + path + " is truncated (" + std::to_string(size) +
                              " bytes)");
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) {
    return Status::IOError("cannot map " + path + ": " + std::strerror(errno));
  }
  std::unique_ptr<VectorSegment> s(new VectorSegment());
  s->map_ = map;
  s->map_bytes_ = size;
  s->path_ = path;
  SegmentHeader h;
  std::memcpy(&h, map, sizeof h);
  auto bad = [&](const std::string& why) {
    return Status::Corruption("vector segment " + path + " is damaged: " + why);
  };
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0) return bad("not a vector segment");
  if (h.version != kVersion) return bad("format version " + std::to_string(h.version));
  if (h.header_crc != HeaderCrc(h)) return bad("its header does not match its checksum");
  if (static_cast<int>(h.dims) != dims) {
    return Status::Mismatch("vector segment " + path + " holds " + std::to_string(h.dims) +
                            "-d vectors, the store " + std::to_string(dims) + "-d");
  }
  const uint64_t chunks = (h.crc_offset - kHeaderBytes + kChunkBytes - 1) / kChunkBytes;
  if (h.rows > size / (static_cast<uint64_t>(h.dims) * 4 + 8) || h.vectors_offset != kHeaderBytes ||
      h.ids_offset != IdsOffset(h.rows, h.dims) || h.crc_offset != h.ids_offset + h.rows * 8 ||
      h.chunk_bytes != kChunkBytes || h.file_bytes != h.crc_offset + chunks * 4 ||
      h.file_bytes != size) {
    return bad("its sizes do not add up to the file's " + std::to_string(size) + " bytes");
  }
  h.store_id[sizeof h.store_id - 1] = '\0';
  s->dims_ = dims;
  s->rows_ = h.rows;
  s->change_id_ = h.change_id;
  s->store_id_ = h.store_id;
  const char* base = static_cast<const char*>(map);
  s->vectors_ = reinterpret_cast<const float*>(base + h.vectors_offset);
  s->ids_ = reinterpret_cast<const int64_t*>(base + h.ids_offset);
  return s;
}

std::unique_ptr<VectorSegment> VectorSegment::InMemory(int dims, int64_t change_id,
                                                       std::vector<int64_t> ids,
                                                       std::vector<float> vectors) {
  std::unique_ptr<VectorSegment> s(new VectorSegment());
  s->dims_ = dims;
  s->change_id_ = change_id;
  s->owned_ids_ = std::move(ids);
  s->owned_vectors_ = std::move(vectors);
  s->rows_ = s->owned_ids_.size();
  s->ids_ = s->owned_ids_.data();
  s->vectors_ = s->owned_vectors_.data();
  return s;
}

Status VectorSegment::Verify() const {
  if (map_ == nullptr) return Status::OK();
  SegmentHeader h;
  std::memcpy(&h, map_, sizeof h);
  const char* base = static_cast<const char*>(map_);
  const uint32_t* crcs = reinterpret_cast<const uint32_t*>(base + h.crc_offset);
  for (uint64_t at = kHeaderBytes, chunk = 0; at < h.crc_offset; at += kChunkBytes, ++chunk) {
    const uint64_t n = std::min(kChunkBytes, h.crc_offset - at);
    const uint32_t crc =
        static_cast<uint32_t>(crc32_z(0, reinterpret_cast<const Bytef*>(base + at), n));
    if (crc != crcs[chunk]) {
      return Status::Corruption("vector segment " + path_ + " is damaged: bytes " +
                                std::to_string(at) + "-" + std::to_string(at + n) +
                                " do not match their checksum");
    }
  }
  for (size_t i = 1; i < rows_; ++i) {
    if (ids_[i] <= ids_[i - 1]) {
      return Status::Corruption("vector segment " + path_ + " is damaged: ids out of order");
    }
  }
  return Status::OK();
}

long VectorSegment::Find(int64_t id) const {
  const int64_t* end = ids_ + rows_;
  const int64_t* at = std::lower_bound(ids_, end, id);
  return at != end && *at == id ? static_cast<long>(at - ids_) : -1;
}

}  // namespace nearlabel
