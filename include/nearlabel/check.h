// `nearlabel check`: verifies a whole store and says what to do about each problem.
#pragma once

#include <string>
#include <vector>

#include "nearlabel/status.h"
#include "nearlabel/store.h"

namespace nearlabel {

// One part of the store checked, with its verdict.
struct CheckItem {
  std::string what;  // "file integrity", "embeddings", "metadata", "index"
  bool ok = true;
  std::string detail;  // what was found ("1,515 rows, all finite unit vectors")
  std::string fix;     // what to do when !ok ("" when ok)
};

struct StoreCheckReport {
  std::vector<CheckItem> items;
  bool ok() const {
    for (const CheckItem& i : items) {
      if (!i.ok) return false;
    }
    return true;
  }
};

// Checks `store` (opened read-only) end to end: SQLite's integrity_check (a PostgreSQL
// server checks its own pages), every row's embedding (size, finite, unit length: see
// EmbeddingProblem), every row's metadata (a JSON object within kMaxJsonDepth), and the
// index (file present, checksum, every indexed row live and every live row indexed once
// caught up). Changes nothing. A failure to run a check at all (the store cannot be read) is
// reported as that check's problem, not as an error; an error means no check could start.
Result<StoreCheckReport> CheckStore(Store& store);

}  // namespace nearlabel
