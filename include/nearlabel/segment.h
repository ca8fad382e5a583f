// The search copy of a store's vectors: one flat file next to the store ("photos.db.vectors"),
// memory-mapped, so opening a store of any size reads no vector and a query touches only the
// pages it needs. The store (SQLite or PostgreSQL) stays the system of record: the segment
// holds the rows of one snapshot of the table, named by the change id of that snapshot, and
// readers catch up from there through the change log. Written to a temporary name, fsynced
// and renamed (a reader that has the old file mapped keeps reading it). File format:
// ARCHITECTURE.md ("Vector segment").
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nearlabel/status.h"

namespace nearlabel {

class VectorSegment {
 public:
  ~VectorSegment();
  VectorSegment(const VectorSegment&) = delete;
  VectorSegment& operator=(const VectorSegment&) = delete;

  // Produces the rows to write, ascending id, by calling `emit(id, vector)` for each; returns
  // the change id of the snapshot they come from.
  using RowSource =
      std::function<Result<int64_t>(const std::function<Status(int64_t, const float*)>& emit)>;

  // Writes a segment of `dims`-d rows to `path` through a temporary file in the same directory
  // (fsync, rename, fsync of the directory): readers see the old file or the new one. Streams:
  // memory use is 8 bytes per row (the ids) whatever the size. `store_id` ties the file to its
  // store. Fails (and leaves `path` as it was) on a write error or rows out of order.
  static Status Write(const std::string& path, int dims, const std::string& store_id,
                      const RowSource& rows);

  // Maps a segment written by Write. Checks the header (magic, version, its checksum), the
  // sizes it states against the file's size, and `dims`; reads no vector. Corruption when the
  // file is not a complete segment, NotFound when there is none.
  static Result<std::unique_ptr<VectorSegment>> Map(const std::string& path, int dims);

  // A segment held in memory (a store whose directory cannot be written; a shared store
  // without a cache directory). `ids` ascending, `vectors` ids.size() x dims.
  static std::unique_ptr<VectorSegment> InMemory(int dims, int64_t change_id,
                                                 std::vector<int64_t> ids,
                                                 std::vector<float> vectors);

  // Reads every byte and compares each 1 MiB chunk with its stored checksum, and checks that
  // ids ascend. Corruption naming the first bad chunk. Thread-safe.
  Status Verify() const;

  size_t rows() const { return rows_; }
  int dims() const { return dims_; }
  int64_t change_id() const { return change_id_; }  // the snapshot's newest change
  const std::string& store_id() const { return store_id_; }
  const std::string& path() const { return path_; }  // "" in memory
  const int64_t* ids() const { return ids_; }
  const float* vectors() const { return vectors_; }
  const float* row(size_t i) const { return vectors_ + i * static_cast<size_t>(dims_); }
  // Row of `id`, or -1 (binary search over the mapped ids). Thread-safe.
  long Find(int64_t id) const;
  uint64_t file_bytes() const { return map_bytes_; }

 private:
  VectorSegment() = default;
  int dims_ = 0;
  size_t rows_ = 0;
  int64_t change_id_ = 0;
  std::string store_id_, path_;
  const int64_t* ids_ = nullptr;
  const float* vectors_ = nullptr;
  void* map_ = nullptr;
  uint64_t map_bytes_ = 0;
  std::vector<int64_t> owned_ids_;
  std::vector<float> owned_vectors_;
};

}  // namespace nearlabel
