// In-memory edits of an ONNX model before it is handed to ONNX Runtime.
#pragma once

#include <string>

#include "nearlabel/status.h"

namespace nearlabel {

// Returns `onnx_bytes` rewritten so that `tensor` is the graph's only output and the nodes it
// does not depend on are gone. ONNX Runtime returns graph outputs only, and a feature tensor
// is usually an inner one; pruning also skips the classifier head nobody reads. A model whose
// nodes carry subgraphs (If, Loop) keeps all its nodes. `source` names the file in errors.
// Fails with Corruption when the bytes are not an ONNX model and NotFound when no node
// produces `tensor`. Thread-safe.
Result<std::string> ExtractFeatureGraph(const std::string& onnx_bytes, const std::string& tensor,
                                        const std::string& source);

}  // namespace nearlabel
