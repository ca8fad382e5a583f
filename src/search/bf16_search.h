// The bf16 candidate paths of ExactSearchBatch and LeaveOneOutNeighbors with the kernel and
// the error margin named by the caller: the tests run every kernel on every CPU (emulated
// where the instructions are missing) and show that a margin of 0 loses neighbours.
#pragma once

#include <vector>

#include "nearlabel/search.h"
#include "search/bf16_gemm.h"

namespace nearlabel {

// ExactSearchBatch with bf16 candidates from `kernel` (not kNone; must be available),
// re-ranked in float32. margin_scale multiplies the proven margin (1: exact top k).
std::vector<std::vector<Neighbor>> ExactSearchBatchBf16(const VectorTable& table,
                                                        const float* queries, size_t nq,
                                                        const SearchParams& params,
                                                        Bf16Kernel kernel, float margin_scale = 1);

// LeaveOneOutNeighbors with bf16 candidates from `kernel`, the same rules and guarantee.
std::vector<std::vector<Neighbor>> LeaveOneOutNeighborsBf16(
    const VectorTable& table, int k, const std::vector<int>& partition,
    const std::vector<int>& group, Bf16Kernel kernel, float margin_scale = 1, size_t tile = 4096);

}  // namespace nearlabel
