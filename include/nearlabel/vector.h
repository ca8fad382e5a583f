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

// Parses "[1, 2.5, -3e-2]": at least one finite float32 (subnormals included; a number that
// overflows, or underflows to zero, is refused, as PostgreSQL's real does). Thread-safe.
Result<std::vector<float>> ParseVectorText(const std::string& text);
// "[1,2.5,-0.03]" with the shortest text that reads back as the same float.
std::string FormatVector(const float* v, size_t n);

// Decodes a little-endian float32 blob; fails unless its size is a multiple of 4 and > 0 and
// every element is finite (NaN and infinity are refused, as pgvector refuses them).
Result<std::vector<float>> VectorFromBlob(const void* data, size_t bytes);
// Encodes as little-endian float32 bytes.
std::string VectorToBlob(const float* v, size_t n);

// Why a stored embedding cannot be trusted, or "" when it can: every element finite and the
// L2 norm 1 within 1e-3 (embedders write unit vectors; a zero vector, an image with no
// feature response, is accepted too). One flipped exponent bit in a stored row makes it the
// nearest neighbour of every query, so every loader checks each row with this. Thread-safe.
std::string EmbeddingProblem(const float* v, size_t n);

// Distance between two vectors of equal length n (caller checks). Cosine of a zero vector
// is NaN; cosine distance is clamped to [0, 2] (rounding gave -2.2e-16 for parallel
// vectors; pgvector clamps too). Accumulates in double.
double VectorDistance(const float* a, const float* b, size_t n, Metric metric);

}  // namespace nearlabel
