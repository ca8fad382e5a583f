#include "embed/onnx_graph.h"

#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <onnx/onnx_pb.h>

namespace nearlabel {

namespace {

// Inputs (scale, zero point) of the quantization of a quantized op's output, by op type; -1
// when the op does not produce a quantized tensor.
int OutputScaleInput(const onnx::NodeProto& node) {
  const std::string& op = node.op_type();
  if (op == "QuantizeLinear") return 1;
  if (op == "QLinearConv" || op == "QLinearAdd" || op == "QLinearMatMul" || op == "QLinearMul") {
    return 6;
  }
  return -1;
}

}  // namespace

Result<std::string> ExtractFeatureGraph(const std::string& onnx_bytes, const std::string& requested,
                                        const std::string& source, std::string* output_name) {
  onnx::ModelProto model;
  if (!model.ParseFromString(onnx_bytes) || !model.has_graph()) {
    return Status::Corruption(source + " is not a readable ONNX model");
  }
  onnx::GraphProto* graph = model.mutable_graph();

  std::unordered_map<std::string, int> producer;  // tensor name -> node index
  bool has_subgraphs = false;
  for (int i = 0; i < graph->node_size(); ++i) {
    const auto& node = graph->node(i);
    for (const auto& out : node.output()) producer[out] = i;
    for (const auto& attr : node.attribute()) {
      has_subgraphs |= attr.has_g() || attr.graphs_size() > 0;
    }
  }
  std::string tensor = requested;
  bool is_input = false;
  for (const auto& in : graph->input()) is_input |= in.name() == tensor;
  if (auto it = producer.find(tensor); it != producer.end()) {
    const onnx::NodeProto& node = graph->node(it->second);
    const int at = OutputScaleInput(node);
    if (at >= 0 && node.input_size() > at + 1) {
      // Quantized activation: read it back as float32 with the producer's scale/zero point.
      onnx::NodeProto* dq = graph->add_node();
      dq->set_op_type("DequantizeLinear");
      dq->set_name(tensor + "_nearlabel_dequantize");
      dq->add_input(tensor);
      dq->add_input(node.input(at));
      dq->add_input(node.input(at + 1));
      tensor += "_nearlabel_float";
      dq->add_output(tensor);
      producer[tensor] = graph->node_size() - 1;
    }
  }
  if (output_name) *output_name = tensor;
  if (!producer.count(tensor) && !is_input) {
    return Status::NotFound("feature tensor '" + tensor + "' is not produced by any node of " +
                            source + " (the card's feature.onnx_tensor must name a node output)");
  }

  // Keep the graph's own ValueInfo for the tensor when it has one (it carries the type).
  onnx::ValueInfoProto output;
  output.set_name(tensor);
  for (const auto& vi : graph->output()) {
    if (vi.name() == tensor) output = vi;
  }
  for (const auto& vi : graph->value_info()) {
    if (vi.name() == tensor) output = vi;
  }
  graph->clear_output();
  *graph->add_output() = output;
  if (has_subgraphs) return model.SerializeAsString();

  // Mark the nodes the feature depends on, walking producers back from it.
  std::vector<bool> keep(graph->node_size(), false);
  std::vector<std::string> todo{tensor};
  std::unordered_set<std::string> used{tensor};
  while (!todo.empty()) {
    std::string name = std::move(todo.back());
    todo.pop_back();
    auto it = producer.find(name);
    if (it == producer.end() || keep[it->second]) continue;
    keep[it->second] = true;
    for (const auto& in : graph->node(it->second).input()) {
      if (!in.empty() && used.insert(in).second) todo.push_back(in);
    }
  }
  onnx::GraphProto pruned_nodes;
  for (int i = 0; i < graph->node_size(); ++i) {
    if (keep[i]) *pruned_nodes.add_node() = graph->node(i);
  }
  graph->mutable_node()->Swap(pruned_nodes.mutable_node());
  // Drop initializers (weights) only the removed nodes read.
  auto* inits = graph->mutable_initializer();
  for (int i = inits->size() - 1; i >= 0; --i) {
    if (!used.count(inits->Get(i).name())) inits->DeleteSubrange(i, 1);
  }
  // Older models also list weights as graph inputs; an input nothing reads would have to be fed.
  auto* inputs = graph->mutable_input();
  for (int i = inputs->size() - 1; i >= 0; --i) {
    if (!used.count(inputs->Get(i).name())) inputs->DeleteSubrange(i, 1);
  }
  return model.SerializeAsString();
}

}  // namespace nearlabel
