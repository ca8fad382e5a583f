// Vector math for the SQL surface, plus registration of the SQLite functions.
#include "store/vector_functions.h"
#include "common/json.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "nearlabel/dataset.h"
#include "nearlabel/vector.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "embeddings are stored as little-endian float32; add byte swapping for this target");

namespace nearlabel {

Result<Metric> ParseMetric(const std::string& name) {
  std::string n;
  for (char c : name) n += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (n == "COSINE") return Metric::kCosine;
  if (n == "EUCLIDEAN" || n == "L2") return Metric::kEuclidean;
  if (n == "EUCLIDEAN_SQUARED" || n == "L2_SQUARED") return Metric::kEuclideanSquared;
  if (n == "DOT") return Metric::kDot;
  if (n == "MANHATTAN" || n == "L1") return Metric::kManhattan;
  return Status::InvalidArgument("unknown distance metric '" + name +
                                 "' (COSINE, EUCLIDEAN, EUCLIDEAN_SQUARED, DOT, MANHATTAN)");
}

const char* MetricName(Metric metric) {
  switch (metric) {
    case Metric::kCosine:
      return "COSINE";
    case Metric::kEuclidean:
      return "EUCLIDEAN";
    case Metric::kEuclideanSquared:
      return "EUCLIDEAN_SQUARED";
    case Metric::kDot:
      return "DOT";
    case Metric::kManhattan:
      return "MANHATTAN";
  }
  return "?";
}

Result<std::vector<float>> ParseVectorText(const std::string& text) {
  std::vector<float> v;
  size_t i = 0;
  auto skip_ws = [&] {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  };
  skip_ws();
  if (i >= text.size() || text[i] != '[') {
    return Status::InvalidArgument("vector text must start with '['");
  }
  ++i;
  skip_ws();
  if (i < text.size() && text[i] == ']') return Status::InvalidArgument("empty vector");
  while (true) {
    skip_ws();
    const char* start = text.c_str() + i;
    char* end = nullptr;
    errno = 0;
    float x = std::strtof(start, &end);
    if (end == start) {
      return Status::InvalidArgument("expected a number at offset " + std::to_string(i));
    }
    // strtof sets ERANGE for subnormal results too: those are exact and kept (from_vector
    // prints them), while overflow and underflow to zero are refused.
    const bool subnormal = errno == ERANGE && x != 0 && std::isfinite(x);
    if (!std::isfinite(x) || (errno == ERANGE && !subnormal)) {
      return Status::InvalidArgument("vector element " + std::to_string(v.size()) +
                                     " is not a finite float32");
    }
    v.push_back(x);
    i += static_cast<size_t>(end - start);
    skip_ws();
    if (i < text.size() && text[i] == ',') {
      ++i;
      continue;
    }
    if (i < text.size() && text[i] == ']') {
      ++i;
      break;
    }
    return Status::InvalidArgument("expected ',' or ']' at offset " + std::to_string(i));
  }
  skip_ws();
  if (i != text.size()) return Status::InvalidArgument("text after the closing ']'");
  return v;
}

std::string FormatVector(const float* v, size_t n) {
  std::string out = "[";
  char buf[32];
  for (size_t i = 0; i < n; ++i) {
    if (i) out += ',';
    std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v[i]));
    out += buf;
  }
  out += ']';
  return out;
}

Result<std::vector<float>> VectorFromBlob(const void* data, size_t bytes) {
  if (bytes == 0 || bytes % 4 != 0) {
    return Status::InvalidArgument("vector blob of " + std::to_string(bytes) +
                                   " bytes is not a non-empty array of float32");
  }
  std::vector<float> v(bytes / 4);
  std::memcpy(v.data(), data, bytes);
  for (size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i])) {
      return Status::InvalidArgument("vector element " + std::to_string(i) + " is " +
                                     (std::isnan(v[i]) ? "NaN" : "infinite") +
                                     " (vectors hold finite float32 only)");
    }
  }
  return v;
}

std::string EmbeddingProblem(const float* v, size_t n) {
  double norm2 = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(v[i])) {
      return "element " + std::to_string(i) + " is " + (std::isnan(v[i]) ? "NaN" : "infinite");
    }
    norm2 += static_cast<double>(v[i]) * v[i];
  }
  const double norm = std::sqrt(norm2);
  if (norm2 == 0 || std::fabs(norm - 1) <= 1e-3) return "";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", norm);
  return std::string("its length is ") + buf + ", not 1 (embeddings are unit vectors)";
}

std::string VectorToBlob(const float* v, size_t n) {
  return std::string(reinterpret_cast<const char*>(v), n * sizeof(float));
}

double VectorDistance(const float* a, const float* b, size_t n, Metric metric) {
  double acc = 0, na = 0, nb = 0;
  switch (metric) {
    case Metric::kCosine:
      for (size_t i = 0; i < n; ++i) {
        acc += static_cast<double>(a[i]) * b[i];
        na += static_cast<double>(a[i]) * a[i];
        nb += static_cast<double>(b[i]) * b[i];
      }
      if (na == 0 || nb == 0) return std::nan("");
      return std::min(2.0, std::max(0.0, 1.0 - acc / std::sqrt(na * nb)));
    case Metric::kEuclidean:
    case Metric::kEuclideanSquared:
      for (size_t i = 0; i < n; ++i) {
        double d = static_cast<double>(a[i]) - b[i];
        acc += d * d;
      }
      return metric == Metric::kEuclidean ? std::sqrt(acc) : acc;
    case Metric::kDot:
      for (size_t i = 0; i < n; ++i) acc += static_cast<double>(a[i]) * b[i];
      return -acc;
    case Metric::kManhattan:
      for (size_t i = 0; i < n; ++i) acc += std::fabs(static_cast<double>(a[i]) - b[i]);
      return acc;
  }
  return std::nan("");
}

// ---- SQLite functions ----
namespace {

// A text value with its length (found by the fuzzer: a NUL inside the text must not end it
// early, or "[2]\0garbage" would be read as "[2]").
std::string TextOf(sqlite3_value* v) {
  const unsigned char* t = sqlite3_value_text(v);
  return t ? std::string(reinterpret_cast<const char*>(t),
                         static_cast<size_t>(sqlite3_value_bytes(v)))
           : std::string();
}

// Reads a vector argument: a float32 blob or '[...]' text. On failure reports an SQL error
// naming the function and returns false.
bool ArgVector(sqlite3_context* ctx, sqlite3_value* arg, const char* fn, std::vector<float>* out) {
  Result<std::vector<float>> v = Status::InvalidArgument("NULL");
  switch (sqlite3_value_type(arg)) {
    case SQLITE_BLOB:
      v = VectorFromBlob(sqlite3_value_blob(arg), static_cast<size_t>(sqlite3_value_bytes(arg)));
      break;
    case SQLITE_TEXT:
      v = ParseVectorText(TextOf(arg));  // whole value: a NUL inside is an error, not an end
      break;
    default:
      v = Status::InvalidArgument("expected a vector (float32 blob or '[...]' text)");
  }
  if (!v.ok()) {
    std::string msg = std::string(fn) + ": " + v.status().message();
    sqlite3_result_error(ctx, msg.c_str(), -1);
    return false;
  }
  *out = std::move(v).value();
  return true;
}

void SqlVectorDistance(sqlite3_context* ctx, int argc, sqlite3_value** argv) {
  // The metric is checked first, so a misspelt one is an error even on NULL vectors (a
  // query that returns NULL for every row would hide it); its whole text is compared, an
  // embedded NUL included.
  Metric metric = Metric::kCosine;
  if (argc == 3) {
    auto parsed = sqlite3_value_type(argv[2]) == SQLITE_TEXT
                      ? ParseMetric(TextOf(argv[2]))
                      : Result<Metric>(Status::InvalidArgument("the metric must be text"));
    if (!parsed.ok()) {
      std::string msg = "vector_distance: " + parsed.status().message();
      sqlite3_result_error(ctx, msg.c_str(), -1);
      return;
    }
    metric = *parsed;
  }
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL || sqlite3_value_type(argv[1]) == SQLITE_NULL) {
    sqlite3_result_null(ctx);
    return;
  }
  std::vector<float> a, b;
  if (!ArgVector(ctx, argv[0], "vector_distance", &a)) return;
  if (!ArgVector(ctx, argv[1], "vector_distance", &b)) return;
  if (a.size() != b.size()) {
    std::string msg = "vector_distance: dimension mismatch (" + std::to_string(a.size()) + " vs " +
                      std::to_string(b.size()) + ")";
    sqlite3_result_error(ctx, msg.c_str(), -1);
    return;
  }
  double d = VectorDistance(a.data(), b.data(), a.size(), metric);
  if (std::isnan(d)) {
    sqlite3_result_null(ctx);  // cosine distance of a zero vector is undefined
  } else {
    sqlite3_result_double(ctx, d);
  }
}

void SqlToVector(sqlite3_context* ctx, int, sqlite3_value** argv) {
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) return sqlite3_result_null(ctx);
  std::vector<float> v;
  if (!ArgVector(ctx, argv[0], "to_vector", &v)) return;
  std::string blob = VectorToBlob(v.data(), v.size());
  sqlite3_result_blob(ctx, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
}

void SqlFromVector(sqlite3_context* ctx, int, sqlite3_value** argv) {
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) return sqlite3_result_null(ctx);
  std::vector<float> v;
  if (!ArgVector(ctx, argv[0], "from_vector", &v)) return;
  std::string text = FormatVector(v.data(), v.size());
  sqlite3_result_text(ctx, text.c_str(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
}

void SqlVectorDims(sqlite3_context* ctx, int, sqlite3_value** argv) {
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) return sqlite3_result_null(ctx);
  std::vector<float> v;
  if (!ArgVector(ctx, argv[0], "vector_dims", &v)) return;
  sqlite3_result_int64(ctx, static_cast<sqlite3_int64>(v.size()));
}

void SqlVectorNorm(sqlite3_context* ctx, int, sqlite3_value** argv) {
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) return sqlite3_result_null(ctx);
  std::vector<float> v;
  if (!ArgVector(ctx, argv[0], "vector_norm", &v)) return;
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  sqlite3_result_double(ctx, std::sqrt(s));
}

// field(metadata, name): the label field as MetadataField reads it (top level, else
// annotations[0].attributes). NULL when absent.
void SqlField(sqlite3_context* ctx, int, sqlite3_value** argv) {
  if (sqlite3_value_type(argv[0]) != SQLITE_TEXT || sqlite3_value_type(argv[1]) != SQLITE_TEXT) {
    return sqlite3_result_null(ctx);
  }
  bool too_deep = false;
  auto j = ParseJson(TextOf(argv[0]), &too_deep);
  if (too_deep) return sqlite3_result_error(ctx, ("field(): " + JsonTooDeepMessage()).c_str(), -1);
  if (j.is_discarded()) return sqlite3_result_null(ctx);
  std::string v = MetadataField(j, TextOf(argv[1]));
  if (v.empty()) return sqlite3_result_null(ctx);
  sqlite3_result_text(ctx, v.c_str(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
}

}  // namespace

Status RegisterVectorFunctions(sqlite3* db) {
  const int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS;
  struct Fn {
    const char* name;
    int argc;
    void (*fn)(sqlite3_context*, int, sqlite3_value**);
  };
  const Fn fns[] = {
      {"vector_distance", 2, SqlVectorDistance},
      {"vector_distance", 3, SqlVectorDistance},
      {"to_vector", 1, SqlToVector},
      {"from_vector", 1, SqlFromVector},
      {"vector_dims", 1, SqlVectorDims},
      {"vector_norm", 1, SqlVectorNorm},
      {"field", 2, SqlField},
  };
  for (const Fn& f : fns) {
    if (sqlite3_create_function_v2(db, f.name, f.argc, flags, nullptr, f.fn, nullptr, nullptr,
                                   nullptr) != SQLITE_OK) {
      return Status::Internal(std::string("cannot register SQL function ") + f.name + ": " +
                              sqlite3_errmsg(db));
    }
  }
  return Status::OK();
}

}  // namespace nearlabel
