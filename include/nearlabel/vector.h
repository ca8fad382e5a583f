// Vector helpers behind the SQL functions to_vector, from_vector, vector_distance,
// vector_dims and vector_norm (Oracle semantics: COSINE is cosine *distance*, DOT is the
// negative dot product).
#pragma once

#include <string>
#include <vector>

#include "nearlabel/status.h"

namespace nearlabel {

enum class Metric { kCosine, kEuclidean, kEuclideanSquared, kDot, kManhattan };

// Parses "COSINE", "EUCLIDEAN", "EUCLIDEAN_SQUARED" (or "L2_SQUARED"), "DOT", "MANHATTAN";
// case-insensitive.
Result<Metric> ParseMetric(const std::string& name);
const char* MetricName(Metric metric);

// Parses "[1, 2.5, -3e-2]": at least one finite number. Thread-safe.
Result<std::vector<float>> ParseVectorText(const std::string& text);
// "[1,2.5,-0.03]" with the shortest text that reads back as the same float.
std::string FormatVector(const float* v, size_t n);

// Decodes a little-endian float32 blob; fails unless its size is a multiple of 4 and > 0.
Result<std::vector<float>> VectorFromBlob(const void* data, size_t bytes);
// Encodes as little-endian float32 bytes.
std::string VectorToBlob(const float* v, size_t n);

// Distance between two vectors of equal length n (caller checks). Cosine of a zero vector
// is NaN. Accumulates in double.
double VectorDistance(const float* a, const float* b, size_t n, Metric metric);

}  // namespace nearlabel
