// Evaluation on a held-out query set: a labelled dataset that is not in the store (an
// official test split, a user's test/ folder), embedded but not stored, and classified
// against the store through the one query engine (Collection::Classify), so every label is
// the one `classify` gives for the same image and options.
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include "nearlabel/classify.h"
#include "nearlabel/collection.h"
#include "nearlabel/dataset.h"
#include "nearlabel/ingest.h"
#include "nearlabel/model.h"

namespace nearlabel {

struct QueryEvalOptions {
  // label_field: the store rows' label that votes; within_field: only store rows whose value
  // equals the query's value of that field; group_field: never a store row whose value
  // equals the query's (leakage across a shared group). k and vote as for classify.
  EvalOptions eval;
  std::string query_label;  // the queries' truth field ("" = eval.label_field)
  std::string where_sql;    // rows that may answer (--where), "" = all
  bool exact = false;       // scan even when the store has an index
  int ef = 0;
};

struct QueryEvalResult {
  // Its rows index `shown`: the embedded queries first (ids -1, -2, ...: not in the store),
  // then each store row that appears as a mismatch's nearest neighbour. No vectors.
  EvalReport report;
  VectorTable shown;
  size_t queries = 0;                    // rows of `shown` that are queries
  std::vector<DatasetProblem> problems;  // the listing's, then images that failed to embed
  bool interrupted = false;
};

// Classifies every image of `queries` against `collection` and reports as leave-one-out
// does (accuracy, per class, confusion, mismatches with their nearest store row). Queries
// without a truth value count as no_label, those with no allowed store row as
// no_candidate. `progress` (may be empty) is called with (images done, images listed).
// Stops after the batch in flight when *stop becomes true. Same thread-safety as
// Collection::Classify; `embedder` is used from this call only.
Result<QueryEvalResult> EvaluateQueries(const Collection& collection, Embedder& embedder,
                                        const DatasetListing& queries,
                                        const QueryEvalOptions& options, const ProgressFn& progress,
                                        const std::atomic<bool>* stop);

}  // namespace nearlabel
