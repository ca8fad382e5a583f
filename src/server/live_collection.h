// The rows a server answers from: every row's vector, source and metadata in memory, plus the
// store's HNSW index when it has one, kept in step with the writes the server makes.
#pragma once

#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "nearlabel/index.h"
#include "nearlabel/store.h"

namespace nearlabel {

class LiveCollection {
 public:
  // Loads every row of `store` and its index (caught up with the table; an unusable index is
  // reported in *notice and searches are exact). `label_field` is the field counted by
  // LabelCounts and browsed by Browse.
  // With `memory_index` (shared stores, which keep no index file) an HNSW index is built in
  // memory over the loaded rows instead.
  static Result<std::unique_ptr<LiveCollection>> Load(Store& store, const std::string& label_field,
                                                      std::string* notice,
                                                      bool memory_index = false);

  struct Row {
    int64_t id = 0;
    std::string source;
    std::string metadata;  // JSON text
    std::string label;     // the label field's value
  };

  // The k nearest rows to `query` (unit length, dims floats) among `allowed_ids` (nullptr:
  // all), nearest first, with float32 distances. Through the index when there is one (`ef`
  // 0: its default), else an exact scan; *plan says which. Thread-safe with other reads.
  std::vector<IdNeighbor> Search(const float* query, int k, const std::vector<int64_t>* allowed_ids,
                                 int ef, std::string* plan) const;
  // The row with `id`; false when there is none. Thread-safe.
  bool Get(int64_t id, Row* row) const;
  // Labels with their row counts, most frequent first. Thread-safe.
  std::vector<std::pair<std::string, size_t>> LabelCounts() const;
  // Rows whose label is `label` ("" = every row), ascending id, from `offset`; *total is
  // the number of such rows. Thread-safe.
  std::vector<Row> Browse(const std::string& label, size_t offset, size_t limit,
                          size_t* total) const;

  // Adds a row the store has committed. Idempotent, and a row once removed never comes back
  // (ids are never reused), so a server's own writes and the same rows arriving again from the
  // change feed, in either order, give the same collection. Takes the write lock.
  Status Add(int64_t id, const std::vector<float>& vector, const std::string& source,
             const std::string& metadata);
  // Drops a row the store has deleted (idempotent). Takes the write lock.
  void Remove(int64_t id);
  // Saves the index when rows were added or removed since it was loaded (store read-write).
  Status SaveIndexIfChanged(Store& store);

  size_t size() const;
  // Rows in the index (0 without one). Thread-safe.
  size_t index_rows() const;
  // Every row's source, ascending id. Thread-safe.
  std::vector<std::string> Sources() const;
  int dims() const { return dims_; }
  bool has_index() const { return index_ != nullptr; }
  const std::string& label_field() const { return label_field_; }

 private:
  LiveCollection() = default;
  // Position of `id` in table_, or -1. Caller holds the lock.
  long Find(int64_t id) const;

  mutable std::shared_mutex mu_;
  int dims_ = 0;
  std::string label_field_;
  VectorTable table_;                // ascending ids (new rows get higher ids)
  std::vector<std::string> labels_;  // per row of table_
  std::unique_ptr<HnswIndex> index_;
  bool index_changed_ = false;
  bool index_in_memory_ = false;         // built at load, no file to save
  std::unordered_set<int64_t> removed_;  // ids removed since load: never added again
};

}  // namespace nearlabel
