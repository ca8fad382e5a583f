#include "server/live_collection.h"

#include <algorithm>
#include <mutex>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "common/json.h"
#include "nearlabel/dataset.h"
#include "nearlabel/search.h"
#include "nearlabel/vector.h"
#include "search/simd.h"

namespace nearlabel {

namespace {
std::string LabelOf(const std::string& metadata, const std::string& field) {
  return MetadataField(ParseJson(metadata), field);
}
}  // namespace

Result<std::unique_ptr<LiveCollection>> LiveCollection::Load(Store& store,
                                                             const std::string& label_field,
                                                             std::string* notice,
                                                             bool memory_index) {
  std::unique_ptr<LiveCollection> c(new LiveCollection());
  c->label_field_ = label_field;
  NL_ASSIGN_OR_RETURN(c->table_, store.LoadVectors(""));
  if (notice) *notice = DamagedRowsNotice(c->table_, store.location());
  c->dims_ = c->table_.dims;
  c->labels_.reserve(c->table_.size());
  for (const std::string& m : c->table_.metadata) c->labels_.push_back(LabelOf(m, label_field));
  if (memory_index) {
    c->index_ = HnswIndex::Create(c->dims_, IndexBuildParams{});
    c->index_in_memory_ = true;
    if (c->table_.size() > 0) {
      NL_RETURN_IF_ERROR(
          c->index_->Add(c->table_.ids.data(), c->table_.vectors.data(), c->table_.size(), 0));
    }
    return c;
  }
  NL_ASSIGN_OR_RETURN(StoreIndexState state, ReadIndexState(store));
  if (state.exists) {
    // A long-running server catches up however far behind the saved index is.
    IndexCatchUp cu;
    auto index = OpenStoreIndex(store, SIZE_MAX, &cu);
    if (index.ok()) {
      c->index_ = std::move(*index);
      c->index_changed_ = cu.added > 0 || cu.removed > 0;
    } else if (notice) {
      *notice += (notice->empty() ? "" : "; ") + ("searching exactly: " + index.status().message());
    }
  }
  return c;
}

long LiveCollection::Find(int64_t id) const {
  auto pos = std::lower_bound(table_.ids.begin(), table_.ids.end(), id);
  if (pos == table_.ids.end() || *pos != id) return -1;
  return static_cast<long>(pos - table_.ids.begin());
}

std::vector<IdNeighbor> LiveCollection::Search(const float* query, int k,
                                               const std::vector<int64_t>* allowed_ids, int ef,
                                               std::string* plan) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  std::vector<IdNeighbor> out;
  if (index_) {
    IndexFilter filter;
    IndexSearchParams p;
    p.k = k;
    p.ef = ef;
    if (allowed_ids) {
      filter = index_->MakeFilter(*allowed_ids);
      p.filter = &filter;
    }
    IndexSearchStats stats;
    out = index_->Search(query, p, &stats);
    if (plan) *plan = std::string("HNSW index, ") + PlanName(stats.plan);
    // The graph holds half-precision copies: report the float32 distances an exact scan
    // gives (the same numbers `nearlabel classify` prints).
    for (IdNeighbor& nb : out) {
      const long row = Find(nb.id);
      if (row >= 0) {
        nb.distance = 1.0f - InnerProduct(query, table_.row(static_cast<size_t>(row)),
                                          static_cast<size_t>(dims_));
      }
    }
    std::stable_sort(out.begin(), out.end(), [](const IdNeighbor& a, const IdNeighbor& b) {
      return a.distance < b.distance;
    });
    return out;
  }
  SearchParams p;
  p.k = k;
  if (allowed_ids) {
    p.allowed.assign(table_.size(), 0);
    for (int64_t id : *allowed_ids) {
      const long row = Find(id);
      if (row >= 0) p.allowed[static_cast<size_t>(row)] = 1;
    }
  }
  for (const Neighbor& nb : ExactSearch(table_, query, p)) {
    out.push_back({table_.ids[nb.row], nb.distance});
  }
  if (plan) *plan = "exact scan";
  return out;
}

bool LiveCollection::Get(int64_t id, Row* row) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  const long i = Find(id);
  if (i < 0) return false;
  *row = {id, table_.sources[static_cast<size_t>(i)], table_.metadata[static_cast<size_t>(i)],
          labels_[static_cast<size_t>(i)]};
  return true;
}

std::vector<std::pair<std::string, size_t>> LiveCollection::LabelCounts() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  std::unordered_map<std::string, size_t> counts;
  for (const std::string& l : labels_) ++counts[l];
  std::vector<std::pair<std::string, size_t>> out(counts.begin(), counts.end());
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  return out;
}

std::vector<LiveCollection::Row> LiveCollection::Browse(const std::string& label, size_t offset,
                                                        size_t limit, size_t* total) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  std::vector<Row> out;
  size_t seen = 0;
  for (size_t i = 0; i < table_.size(); ++i) {
    if (!label.empty() && labels_[i] != label) continue;
    if (seen >= offset && out.size() < limit) {
      out.push_back({table_.ids[i], table_.sources[i], table_.metadata[i], labels_[i]});
    }
    ++seen;
  }
  *total = seen;
  return out;
}

Status LiveCollection::Add(int64_t id, const std::vector<float>& vector, const std::string& source,
                           const std::string& metadata) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  if (static_cast<int>(vector.size()) != dims_) {
    return Status::Mismatch("vector of " + std::to_string(vector.size()) + " dims, expected " +
                            std::to_string(dims_));
  }
  const std::string problem = EmbeddingProblem(vector.data(), vector.size());
  if (!problem.empty()) return Status::Corruption("row " + std::to_string(id) + ": " + problem);
  if (Find(id) >= 0 || removed_.count(id)) return Status::OK();  // here already, or gone
  if (index_) {
    NL_RETURN_IF_ERROR(index_->Add(&id, vector.data(), 1, 1));
    index_changed_ = true;
  }
  // New rows almost always have the highest id (append); a row another writer committed just
  // before ours can arrive after it, and goes to its sorted place.
  const size_t at = static_cast<size_t>(std::lower_bound(table_.ids.begin(), table_.ids.end(), id) -
                                        table_.ids.begin());
  table_.ids.insert(table_.ids.begin() + static_cast<long>(at), id);
  table_.sources.insert(table_.sources.begin() + static_cast<long>(at), source);
  table_.metadata.insert(table_.metadata.begin() + static_cast<long>(at), metadata);
  table_.vectors.insert(table_.vectors.begin() + static_cast<long>(at * static_cast<size_t>(dims_)),
                        vector.begin(), vector.end());
  labels_.insert(labels_.begin() + static_cast<long>(at), LabelOf(metadata, label_field_));
  return Status::OK();
}

size_t LiveCollection::index_rows() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return index_ ? index_->size() : 0;
}

std::vector<std::string> LiveCollection::Sources() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return table_.sources;
}

void LiveCollection::Remove(int64_t id) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  removed_.insert(id);
  const long i = Find(id);
  if (i < 0) return;
  const size_t r = static_cast<size_t>(i);
  if (index_) {
    index_->Remove({id});
    index_changed_ = true;
  }
  table_.ids.erase(table_.ids.begin() + i);
  table_.sources.erase(table_.sources.begin() + i);
  table_.metadata.erase(table_.metadata.begin() + i);
  labels_.erase(labels_.begin() + i);
  const auto from = table_.vectors.begin() + static_cast<long>(r * static_cast<size_t>(dims_));
  table_.vectors.erase(from, from + dims_);
}

Status LiveCollection::SaveIndexIfChanged(Store& store) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  if (!index_ || !index_changed_ || index_in_memory_) return Status::OK();
  NL_RETURN_IF_ERROR(SaveStoreIndex(store, *index_));
  index_changed_ = false;
  return Status::OK();
}

size_t LiveCollection::size() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return table_.size();
}

}  // namespace nearlabel
