// The data audit (`nearlabel audit`): likely label errors, near-duplicate groups, outliers,
// and the leakage between a query set and the store. Every finding comes from the rows'
// own neighbours, found exactly (LeaveOneOutNeighbors, ExactSearchBatch).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "nearlabel/search.h"
#include "nearlabel/status.h"
#include "nearlabel/store.h"

namespace nearlabel {

struct AuditOptions {
  std::string label_field;  // the labels audited (required)
  std::string group_field;  // neighbours never from the row's own group ("" = none)
  // Neighbours that vote for each row's out-of-sample probabilities, and the temperature of
  // their similarity softmax (Vote::kSoftmax): the values that found the most flipped labels
  // over the shared datasets among k 10-50 and temperatures 0.05-0.2.
  int k = 30;
  double temperature = 0.2;
  // The out-of-sample probabilities are (1 - probe_weight) x the neighbour vote's plus
  // probe_weight x a linear probe's: ridge regression of the one-hot labels on the vectors,
  // each row predicted without itself (closed form), softmax at probe_temperature. The vote
  // alone misses flipped labels where classes overlap (cifar-10), the probe alone where one
  // class dominates (magnetic-tile); half of each did best on every shared dataset
  // (bench/README.md, "Audit"). 0: the vote alone. Not used with group_field (the probe
  // cannot leave groups out).
  double probe_weight = 0.5;
  double probe_lambda = 10;
  double probe_temperature = 0.1;
  // Cosine distance (1 - cosine similarity of the unit vectors) at or below which two
  // images are near duplicates: a re-encoded or resized copy moves far less than this, two
  // different photos of one object far more (measured in bench/README.md, "Audit").
  double duplicate_distance = 0.02;
  // A row is an outlier when its nearest other row is farther than the upper quartile of
  // all rows' nearest distances plus this many interquartile ranges (Tukey's far fences).
  double outlier_iqr = 3;
  // Leakage: a query whose thumbnail's perceptual hash is within this many bits (of 63) of
  // a store row's is a copy of it; -1 turns hashes off.
  int hash_bits = 6;
};

// A row whose label its neighbours disagree with, scored as confident learning does
// (Northcutt et al. 2021; cleanlab's find_label_issues): out-of-sample class probabilities
// from the leave-one-out neighbour vote (similarity softmax) and a linear probe (see
// AuditOptions::probe_weight), a row is an issue when some
// other class is more probable than its label, and issues are ranked by self-confidence (the
// probability of the row's own label), lowest first, as cleanlab ranks by default (how many
// flipped labels it finds: bench/audit_label_noise, figures in bench/README.md).
struct LabelIssue {
  size_t row = 0;  // into the audited table
  std::string label, suggested;
  double label_probability = 0;      // out-of-sample probability of its own label
  double suggested_probability = 0;  // ... of the most probable other class
  double margin = 0;                 // label_probability - suggested_probability (< 0)
  // In confident learning's off-diagonal too: the most probable class among those whose
  // probability reaches their threshold (the class's mean probability over the rows labelled
  // with it) is not the row's label.
  bool confident = false;
};

// Rows within duplicate_distance of each other, or with perceptual hashes within hash_bits
// (connected: a chain of near pairs), with the
// largest distance of a pair in the group and whether they carry more than one label.
struct DuplicateGroup {
  std::vector<size_t> rows;  // ascending
  float max_distance = 0;
  bool mixed_labels = false;
};

struct Outlier {
  size_t row = 0;
  float nearest_distance = 0;  // to its nearest other row
};

struct AuditReport {
  AuditOptions options;
  size_t rows = 0;        // rows audited (labelled and undamaged)
  size_t unlabelled = 0;  // rows without the label field: neither audited nor voting
  bool probe = false;     // the linear probe's probabilities were mixed in
  std::vector<std::string> classes;
  std::vector<double> class_thresholds;    // per class (as `classes`)
  std::vector<LabelIssue> label_issues;    // ranked, likeliest error first
  std::vector<DuplicateGroup> duplicates;  // largest group first
  std::vector<Outlier> outliers;           // farthest first
  float outlier_distance = 0;              // the fence used
  std::vector<std::string> labels;         // per audited row
  std::vector<size_t> table_rows;          // per audited row: its row in the input table
};

// What identifies an image's content beside its vector: the file's sha256 ("" unknown) and
// a perceptual hash of its thumbnail (PerceptualHash; nullopt unknown), per row.
struct ImageKeys {
  std::vector<std::string> sha256;
  std::vector<std::optional<uint64_t>> phash;
};

// Audits the rows of `table` that have options.label_field. The report's row numbers index
// `audited` (those rows, in table order; may be null). InvalidArgument without a label
// field, with k < 1, or with fewer than 2 labelled rows. Thread-safe (read-only on table).
// With `keys` (per row of `table`; may be null) rows whose perceptual hashes are within
// options.hash_bits join the near-duplicate groups too (for tables of up to 200,000 rows:
// every pair is compared).
Result<AuditReport> AuditTable(const VectorTable& table, const AuditOptions& options,
                               VectorTable* audited = nullptr, const ImageKeys* keys = nullptr);

// A query image against the store.
struct LeakedQuery {
  size_t query = 0;        // index into the query table
  size_t row = 0;          // the store row it copies (into the store table)
  float distance = 0;      // cosine distance between their vectors
  int hash_distance = -1;  // bits between their perceptual hashes (-1: unknown)
  bool identical = false;  // byte-identical file (same sha256)
};

struct LeakageReport {
  size_t queries = 0;
  size_t identical = 0, near = 0;   // near: a near copy, not byte-identical
  std::vector<LeakedQuery> leaked;  // identical first, then by distance
  // 1-NN accuracy of the labelled queries against the store's labels: all of them, and
  // without the leaked ones (the figure to trust); -1 when there are none to count.
  double accuracy = -1, accuracy_without_leaked = -1;
  size_t scored = 0, scored_without_leaked = 0;
};

// The leakage from `store_rows` to `queries`: a query is leaked when a store row has its
// sha256 (identical), or its perceptual hash within options.hash_bits (a re-encoded, resized
// or recoloured copy: features of the adjusted embedding move too much under re-encoding
// for a distance alone to tell copies from look-alikes), or lies within
// options.duplicate_distance. Labels from options.label_field of each side's metadata.
// Thread-safe.
LeakageReport AuditLeakage(const VectorTable& store_rows, const ImageKeys& store_keys,
                           const VectorTable& queries, const ImageKeys& query_keys,
                           const AuditOptions& options);

}  // namespace nearlabel
