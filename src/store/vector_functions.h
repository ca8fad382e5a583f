// Registers nearlabel's SQL functions on a SQLite connection: vector_distance(a, b [, metric]),
// to_vector(text), from_vector(blob), vector_dims(v), vector_norm(v), field(metadata, name).
// Malformed input or a dimension mismatch is an SQL error, never a crash.
#pragma once

#include <sqlite3.h>

#include "nearlabel/status.h"

namespace nearlabel {

Status RegisterVectorFunctions(sqlite3* db);

}  // namespace nearlabel
