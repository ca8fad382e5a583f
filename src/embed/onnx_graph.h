// In-memory edits of an ONNX model before it is handed to ONNX Runtime.
#pragma once

#include <string>

#include "nearlabel/status.h"

namespace nearlabel {

// Returns `onnx_bytes` rewritten so that `tensor` is the graph's only output and the nodes it
// does not depend on are gone. ONNX Runtime returns graph outputs only, and a feature tensor
// is usually an inner one; pruning also skips the classifier head nobody reads. A model whose
// nodes carry subgraphs (If, Loop) keeps all its nodes. `source` names the file in errors.
// When `tensor` is a quantized activation (the output of QuantizeLinear, QLinearConv,
// QLinearAdd or QLinearMatMul), a DequantizeLinear with its producer's output scale and zero
// point is appended, so the output is float32 either way; *output_name (may be null) gets the
// name of the tensor to fetch.
// Fails with Corruption when the bytes are not an ONNX model and NotFound when no node
// produces `tensor`. Thread-safe.
Result<std::string> ExtractFeatureGraph(const std::string& onnx_bytes, const std::string& tensor,
                                        const std::string& source,
                                        std::string* output_name = nullptr);

}  // namespace nearlabel
