// libFuzzer target: to_vector text, parsed directly and through the SQL function, with the
// round trip from_vector(to_vector(x)) checked for every accepted input.
#include <sqlite3.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "nearlabel/vector.h"
#include "store/vector_functions.h"

namespace {
sqlite3* db = nullptr;
sqlite3_stmt* stmt = nullptr;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (sqlite3_open(":memory:", &db) != SQLITE_OK) __builtin_trap();
  if (!nearlabel::RegisterVectorFunctions(db).ok()) __builtin_trap();
  if (sqlite3_prepare_v2(db, "SELECT vector_dims(to_vector(?1)), vector_norm(to_vector(?1))", -1,
                         &stmt, nullptr) != SQLITE_OK) {
    __builtin_trap();
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto v = nearlabel::ParseVectorText(text);
  if (v.ok()) {
    if (v->empty()) __builtin_trap();
    for (float x : *v) {
      if (!std::isfinite(x)) __builtin_trap();  // the contract: finite numbers only
    }
    auto back = nearlabel::ParseVectorText(nearlabel::FormatVector(v->data(), v->size()));
    if (!back.ok() || *back != *v) __builtin_trap();  // shortest text reads back exactly
    auto blob = nearlabel::VectorToBlob(v->data(), v->size());
    auto decoded = nearlabel::VectorFromBlob(blob.data(), blob.size());
    if (!decoded.ok() || *decoded != *v) __builtin_trap();
  }
  sqlite3_reset(stmt);
  sqlite3_bind_text(stmt, 1, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  const int rc = sqlite3_step(stmt);
  // The SQL function accepts exactly what the parser accepts.
  if ((rc == SQLITE_ROW) != v.ok()) __builtin_trap();
  if (rc == SQLITE_ROW && sqlite3_column_int64(stmt, 0) != static_cast<int64_t>(v->size())) {
    __builtin_trap();
  }
  return 0;
}
