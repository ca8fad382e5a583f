// The data audit: label issues by confident learning over leave-one-out neighbour votes,
// near-duplicate groups, outliers, and query-store leakage.
#include "nearlabel/audit.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <unordered_map>

#include "common/json.h"
#include "eval/labelled_rows.h"
#include "nearlabel/classify.h"
#include "nearlabel/dataset.h"
#include "nearlabel/image.h"

// LAPACK's Cholesky factorisation, from OpenBLAS (which has no LAPACKE header in Debian).
extern "C" void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info,
                        size_t uplo_len);

namespace nearlabel {
namespace {

constexpr size_t kProbeChunk = 2048;  // rows per pass of the linear probe (bounded memory)

// The rows [at, at + m) of `t` times L^-T (row-major), where `upper` holds L^T: the rows'
// coordinates in which the ridge problem's Gram matrix is the identity.
void WhitenRows(const VectorTable& t, size_t at, size_t m, const std::vector<double>& upper,
                std::vector<double>* out) {
  const size_t d = static_cast<size_t>(t.dims);
  out->resize(m * d);
  for (size_t i = 0; i < m * d; ++i) (*out)[i] = t.vectors[at * d + i];
  cblas_dtrsm(CblasRowMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit,
              static_cast<int>(m), static_cast<int>(d), 1.0, upper.data(), static_cast<int>(d),
              out->data(), static_cast<int>(d));
}

// Out-of-sample probabilities from a linear probe: ridge regression of the one-hot labels on
// the vectors (penalty `lambda`), each row predicted by the fit without it (the closed form
// (f_i - h_i y_i) / (1 - h_i), h_i the row's leverage), then a softmax at `temperature`.
// O(n d^2) in row chunks, so it scales with the store. Complements the neighbour vote: a
// classifier of the whole class, where the vote sees only a row's locality. false when the
// Gram matrix cannot be factorised (then the vote is used alone).
bool ProbeProbabilities(const VectorTable& t, const std::vector<size_t>& label_class, size_t c,
                        double lambda, double temperature, std::vector<std::vector<double>>* p) {
  const size_t n = t.size(), d = static_cast<size_t>(t.dims);
  std::vector<double> gram(d * d, 0), chunk;
  for (size_t at = 0; at < n; at += kProbeChunk) {
    const size_t m = std::min(kProbeChunk, n - at);
    chunk.assign(t.vectors.begin() + static_cast<std::ptrdiff_t>(at * d),
                 t.vectors.begin() + static_cast<std::ptrdiff_t>((at + m) * d));
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(d), static_cast<int>(m),
                1.0, chunk.data(), static_cast<int>(d), 1.0, gram.data(), static_cast<int>(d));
  }
  for (size_t k = 0; k < d; ++k) gram[k * d + k] += lambda;
  // Row-major upper = column-major lower: dpotrf("L") leaves L there, which row-major reads
  // as L^T.
  const int dn = static_cast<int>(d);
  int info = 0;
  dpotrf_("L", &dn, gram.data(), &dn, &info, 1);
  if (info != 0) return false;
  for (size_t r = 0; r < d; ++r) {
    for (size_t k = 0; k < r; ++k) gram[r * d + k] = 0;  // below the diagonal: not L^T's
  }
  std::vector<double> coef(d * c, 0);  // L^-1 X^T Y
  for (size_t at = 0; at < n; at += kProbeChunk) {
    const size_t m = std::min(kProbeChunk, n - at);
    WhitenRows(t, at, m, gram, &chunk);
    for (size_t i = 0; i < m; ++i) {
      const size_t y = label_class[at + i];
      for (size_t k = 0; k < d; ++k) coef[k * c + y] += chunk[i * d + k];
    }
  }
  std::vector<double> fit;
  for (size_t at = 0; at < n; at += kProbeChunk) {
    const size_t m = std::min(kProbeChunk, n - at);
    WhitenRows(t, at, m, gram, &chunk);
    fit.assign(m * c, 0);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(c),
                dn, 1.0, chunk.data(), dn, coef.data(), static_cast<int>(c), 0.0, fit.data(),
                static_cast<int>(c));
    for (size_t i = 0; i < m; ++i) {
      double h = 0;
      for (size_t k = 0; k < d; ++k) h += chunk[i * d + k] * chunk[i * d + k];
      const size_t y = label_class[at + i];
      std::vector<double>& row = (*p)[at + i];
      row.assign(c, 0);
      double top = -1e300;
      for (size_t j = 0; j < c; ++j) {
        const double f = (fit[i * c + j] - (j == y ? h : 0)) / std::max(1e-9, 1 - h);
        row[j] = f / temperature;
        top = std::max(top, row[j]);
      }
      double sum = 0;
      for (double& v : row) sum += v = std::exp(v - top);
      for (double& v : row) v /= sum;
    }
  }
  return true;
}

// Out-of-sample probabilities [row][class] from each row's neighbour vote, lightly smoothed
// so that a class no neighbour voted for keeps a small probability (ranks stay defined).
std::vector<std::vector<double>> VoteProbabilities(
    const std::vector<std::vector<Neighbor>>& neighbors, const std::vector<std::string>& labels,
    const std::map<std::string, size_t>& class_index, double temperature) {
  const size_t c = class_index.size();
  std::vector<std::vector<double>> p(labels.size(), std::vector<double>(c, 0));
  for (size_t i = 0; i < labels.size(); ++i) {
    const Prediction vote = VoteLabel(neighbors[i], labels, Vote::kSoftmax, temperature);
    const double smooth = 1e-3;
    for (const auto& [label, share] : vote.scores) p[i][class_index.at(label)] = share;
    for (double& v : p[i]) v = (v + smooth) / (1 + smooth * static_cast<double>(c));
  }
  return p;
}

std::vector<LabelIssue> FindLabelIssues(const std::vector<std::vector<double>>& p,
                                        const std::vector<size_t>& label_class,
                                        const std::vector<std::string>& classes,
                                        std::vector<double>* thresholds) {
  const size_t c = classes.size();
  // Per-class threshold: the mean probability of the class over rows labelled with it.
  thresholds->assign(c, 0);
  std::vector<size_t> count(c, 0);
  for (size_t i = 0; i < p.size(); ++i) {
    (*thresholds)[label_class[i]] += p[i][label_class[i]];
    ++count[label_class[i]];
  }
  for (size_t j = 0; j < c; ++j) (*thresholds)[j] /= std::max<size_t>(1, count[j]);
  std::vector<LabelIssue> issues;
  for (size_t i = 0; i < p.size(); ++i) {
    const size_t own = label_class[i];
    size_t best_other = own == 0 && c > 1 ? 1 : 0;
    for (size_t j = 0; j < c; ++j) {
      if (j != own && p[i][j] > p[i][best_other]) best_other = j;
    }
    if (c < 2 || p[i][best_other] <= p[i][own]) continue;  // the vote agrees with the label
    // The confident class: the most probable one among those at or above their threshold.
    long confident = -1;
    for (size_t j = 0; j < c; ++j) {
      if (p[i][j] >= (*thresholds)[j] && (confident < 0 || p[i][j] > p[i][confident])) {
        confident = static_cast<long>(j);
      }
    }
    LabelIssue issue;
    issue.row = i;
    issue.label = classes[own];
    issue.suggested = classes[best_other];
    issue.label_probability = p[i][own];
    issue.suggested_probability = p[i][best_other];
    issue.margin = issue.label_probability - issue.suggested_probability;
    issue.confident = confident >= 0 && static_cast<size_t>(confident) != own;
    issues.push_back(issue);
  }
  // Self-confidence first (cleanlab's default rank), the margin between equals.
  std::stable_sort(issues.begin(), issues.end(), [](const LabelIssue& a, const LabelIssue& b) {
    return a.label_probability != b.label_probability ? a.label_probability < b.label_probability
                                                      : a.margin < b.margin;
  });
  return issues;
}

// Groups of rows joined by near pairs (union-find over each row's near neighbours).
std::vector<DuplicateGroup> FindDuplicates(const std::vector<std::vector<Neighbor>>& neighbors,
                                           const std::vector<std::string>& labels,
                                           double max_distance,
                                           const std::vector<std::optional<uint64_t>>& hashes,
                                           int hash_bits) {
  std::vector<size_t> parent(neighbors.size());
  std::iota(parent.begin(), parent.end(), 0);
  auto find = [&](size_t x) {
    while (parent[x] != x) x = parent[x] = parent[parent[x]];
    return x;
  };
  std::vector<float> worst(neighbors.size(), 0);
  for (size_t i = 0; i < neighbors.size(); ++i) {
    for (const Neighbor& n : neighbors[i]) {
      if (n.distance > max_distance) break;  // nearest first
      const size_t a = find(i), b = find(n.row);
      const float w = std::max({worst[a], worst[b], n.distance});
      parent[std::max(a, b)] = std::min(a, b);
      worst[std::min(a, b)] = w;
    }
  }
  if (hash_bits >= 0 && hashes.size() == neighbors.size() && hashes.size() <= 200000) {
    for (size_t i = 0; i < hashes.size(); ++i) {
      for (size_t j = i + 1; hashes[i] && j < hashes.size(); ++j) {
        if (!hashes[j] || HashDistance(*hashes[i], *hashes[j]) > hash_bits) continue;
        const size_t a = find(i), b = find(j);
        parent[std::max(a, b)] = std::min(a, b);
        worst[std::min(a, b)] = std::max(worst[a], worst[b]);
      }
    }
  }
  std::map<size_t, DuplicateGroup> by_root;
  for (size_t i = 0; i < neighbors.size(); ++i) by_root[find(i)].rows.push_back(i);
  std::vector<DuplicateGroup> groups;
  for (auto& [root, g] : by_root) {
    if (g.rows.size() < 2) continue;
    g.max_distance = worst[root];
    for (size_t r : g.rows) g.mixed_labels |= labels[r] != labels[g.rows[0]];
    groups.push_back(std::move(g));
  }
  std::stable_sort(groups.begin(), groups.end(), [](const auto& a, const auto& b) {
    return a.rows.size() != b.rows.size() ? a.rows.size() > b.rows.size()
                                          : a.mixed_labels > b.mixed_labels;
  });
  return groups;
}

// Rows whose nearest other row lies beyond the upper far fence of all nearest distances.
std::vector<Outlier> FindOutliers(const std::vector<std::vector<Neighbor>>& neighbors,
                                  double iqr_factor, float* fence) {
  std::vector<float> nearest;
  for (const auto& n : neighbors) {
    if (!n.empty()) nearest.push_back(n.front().distance);
  }
  *fence = 0;
  if (nearest.size() < 4) return {};
  std::vector<float> sorted = nearest;
  std::sort(sorted.begin(), sorted.end());
  const float q1 = sorted[sorted.size() / 4], q3 = sorted[sorted.size() * 3 / 4];
  *fence = q3 + static_cast<float>(iqr_factor) * (q3 - q1);
  std::vector<Outlier> out;
  for (size_t i = 0; i < neighbors.size(); ++i) {
    if (!neighbors[i].empty() && neighbors[i].front().distance > *fence) {
      out.push_back({i, neighbors[i].front().distance});
    }
  }
  std::sort(out.begin(), out.end(), [](const Outlier& a, const Outlier& b) {
    return a.nearest_distance > b.nearest_distance;
  });
  return out;
}

}  // namespace

Result<AuditReport> AuditTable(const VectorTable& table, const AuditOptions& options,
                               VectorTable* audited, const ImageKeys* keys) {
  if (options.label_field.empty()) return Status::InvalidArgument("the audit needs a label field");
  if (options.k < 1) return Status::InvalidArgument("k must be >= 1");
  AuditReport rep;
  rep.options = options;
  LabelledRows selected = SelectLabelled(table, options.label_field, options.group_field);
  VectorTable& t = selected.table;
  rep.labels = std::move(selected.labels);
  rep.table_rows = std::move(selected.rows);
  const std::vector<std::string>& groups = selected.groups;
  rep.rows = t.size();
  rep.unlabelled = table.size() - t.size();
  if (t.size() < 2) {
    return Status::InvalidArgument("the audit needs at least 2 rows labelled '" +
                                   options.label_field + "'");
  }
  std::map<std::string, size_t> class_index;
  for (const auto& l : rep.labels) class_index.emplace(l, 0);
  for (auto& [label, index] : class_index) {
    index = rep.classes.size();
    rep.classes.push_back(label);
  }
  std::vector<size_t> label_class;
  for (const auto& l : rep.labels) label_class.push_back(class_index[l]);

  // Group-aware neighbours vote; duplicates and outliers look at every other row.
  std::vector<int> group_ids;
  if (!options.group_field.empty()) {
    std::map<std::string, int> ids;
    for (const auto& g : groups) {
      group_ids.push_back(g.empty() ? -1
                                    : ids.emplace(g, static_cast<int>(ids.size())).first->second);
    }
  }
  const auto voters = LeaveOneOutNeighbors(t, options.k, {}, group_ids);
  const auto near = group_ids.empty() ? voters : LeaveOneOutNeighbors(t, options.k, {}, {});
  auto p = VoteProbabilities(voters, rep.labels, class_index, options.temperature);
  // The linear probe sees every row, groups included, so it only joins ungrouped audits.
  std::vector<std::vector<double>> probe(t.size());
  if (options.probe_weight > 0 && group_ids.empty() &&
      ProbeProbabilities(t, label_class, rep.classes.size(), options.probe_lambda,
                         options.probe_temperature, &probe)) {
    const double w = options.probe_weight;
    for (size_t i = 0; i < t.size(); ++i) {
      for (size_t j = 0; j < p[i].size(); ++j) p[i][j] = (1 - w) * p[i][j] + w * probe[i][j];
    }
    rep.probe = true;
  }
  rep.label_issues = FindLabelIssues(p, label_class, rep.classes, &rep.class_thresholds);
  std::vector<std::optional<uint64_t>> hashes;  // of the audited rows
  if (keys && keys->phash.size() == table.size()) {
    for (size_t r : rep.table_rows) hashes.push_back(keys->phash[r]);
  }
  rep.duplicates =
      FindDuplicates(near, rep.labels, options.duplicate_distance, hashes, options.hash_bits);
  rep.outliers = FindOutliers(near, options.outlier_iqr, &rep.outlier_distance);
  if (audited) *audited = std::move(t);
  return rep;
}

namespace {

// The store row whose hash is nearest query q's within `bits` (the lowest distance, then the
// lowest row), or nullopt.
std::optional<std::pair<size_t, int>> NearestHash(const ImageKeys& store, uint64_t q, int bits) {
  std::optional<std::pair<size_t, int>> best;
  for (size_t r = 0; r < store.phash.size(); ++r) {
    if (!store.phash[r]) continue;
    const int d = HashDistance(*store.phash[r], q);
    if (d <= bits && (!best || d < best->second)) best = {{r, d}};
  }
  return best;
}

// How query q copies the store, if it does (`nearest`: its nearest row by vector).
std::optional<LeakedQuery> CopyOf(size_t q, const Neighbor& nearest, const ImageKeys& store,
                                  const ImageKeys& queries,
                                  const std::unordered_map<std::string, size_t>& row_of_sha,
                                  const AuditOptions& options) {
  if (q < queries.sha256.size() && !queries.sha256[q].empty()) {
    auto it = row_of_sha.find(queries.sha256[q]);
    if (it != row_of_sha.end()) return LeakedQuery{q, it->second, 0.f, 0, true};
  }
  if (options.hash_bits >= 0 && q < queries.phash.size() && queries.phash[q]) {
    if (auto h = NearestHash(store, *queries.phash[q], options.hash_bits)) {
      return LeakedQuery{q, h->first, nearest.row == h->first ? nearest.distance : -1.f, h->second,
                         false};
    }
  }
  if (nearest.distance <= options.duplicate_distance) {
    return LeakedQuery{q, nearest.row, nearest.distance, -1, false};
  }
  return std::nullopt;
}

}  // namespace

LeakageReport AuditLeakage(const VectorTable& store_rows, const ImageKeys& store_keys,
                           const VectorTable& queries, const ImageKeys& query_keys,
                           const AuditOptions& options) {
  LeakageReport rep;
  rep.queries = queries.size();
  if (queries.size() == 0 || store_rows.size() == 0) return rep;
  std::unordered_map<std::string, size_t> row_of_sha;
  for (size_t i = 0; i < store_keys.sha256.size(); ++i) {
    if (!store_keys.sha256[i].empty()) row_of_sha.emplace(store_keys.sha256[i], i);
  }
  SearchParams params;
  params.k = 1;
  const auto nearest = ExactSearchBatch(store_rows, queries.vectors.data(), queries.size(), params);
  size_t correct = 0, correct_clean = 0;
  for (size_t q = 0; q < queries.size(); ++q) {
    if (nearest[q].empty()) continue;
    auto copy = CopyOf(q, nearest[q][0], store_keys, query_keys, row_of_sha, options);
    if (copy && copy->distance < 0) {  // found by its hash: its own row's distance
      double dot = 0;
      for (int k = 0; k < queries.dims; ++k) {
        dot += static_cast<double>(queries.row(q)[k]) * store_rows.row(copy->row)[k];
      }
      copy->distance = static_cast<float>(1 - dot);
    }
    if (copy) {
      (copy->identical ? rep.identical : rep.near)++;
      rep.leaked.push_back(*copy);
    }
    const std::string truth = MetadataField(ParseJson(queries.metadata[q]), options.label_field);
    if (truth.empty()) continue;
    const bool ok = MetadataField(ParseJson(store_rows.metadata[nearest[q][0].row]),
                                  options.label_field) == truth;
    ++rep.scored;
    correct += ok;
    if (!copy) {
      ++rep.scored_without_leaked;
      correct_clean += ok;
    }
  }
  if (rep.scored) rep.accuracy = static_cast<double>(correct) / rep.scored;
  if (rep.scored_without_leaked) {
    rep.accuracy_without_leaked = static_cast<double>(correct_clean) / rep.scored_without_leaked;
  }
  std::stable_sort(rep.leaked.begin(), rep.leaked.end(), [](const auto& a, const auto& b) {
    return a.identical != b.identical ? a.identical : a.distance < b.distance;
  });
  return rep;
}

}  // namespace nearlabel
