#include "embed/onnx_graph.h"

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

namespace nearlabel {
namespace {

// x -> Relu -> a -> Relu -> b -> Add(b, w) -> y, with w a weight and y the graph output.
std::string ChainModel() {
  onnx::ModelProto m;
  m.set_ir_version(7);
  m.add_opset_import()->set_version(13);
  auto* g = m.mutable_graph();
  g->set_name("chain");
  auto add_node = [&](const char* op, std::vector<std::string> in, const char* out) {
    auto* n = g->add_node();
    n->set_op_type(op);
    for (auto& i : in) n->add_input(i);
    n->add_output(out);
  };
  add_node("Relu", {"x"}, "a");
  add_node("Relu", {"a"}, "b");
  add_node("Add", {"b", "w"}, "y");
  g->add_input()->set_name("x");
  g->add_input()->set_name("w");  // older exporters list weights as inputs too
  auto* w = g->add_initializer();
  w->set_name("w");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_float_data(1.f);
  g->add_output()->set_name("y");
  return m.SerializeAsString();
}

TEST(OnnxGraphTest, InnerTensorBecomesTheOnlyOutputAndUnusedNodesGo) {
  auto bytes = ExtractFeatureGraph(ChainModel(), "a", "chain.onnx");
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  onnx::ModelProto m;
  ASSERT_TRUE(m.ParseFromString(*bytes));
  ASSERT_EQ(m.graph().output_size(), 1);
  EXPECT_EQ(m.graph().output(0).name(), "a");
  ASSERT_EQ(m.graph().node_size(), 1);
  EXPECT_EQ(m.graph().node(0).output(0), "a");
  EXPECT_EQ(m.graph().initializer_size(), 0);  // only the removed Add read w
  ASSERT_EQ(m.graph().input_size(), 1);
  EXPECT_EQ(m.graph().input(0).name(), "x");
}

TEST(OnnxGraphTest, ExistingOutputKeepsEverythingItNeeds) {
  auto bytes = ExtractFeatureGraph(ChainModel(), "y", "chain.onnx");
  ASSERT_TRUE(bytes.ok());
  onnx::ModelProto m;
  ASSERT_TRUE(m.ParseFromString(*bytes));
  EXPECT_EQ(m.graph().node_size(), 3);
  EXPECT_EQ(m.graph().initializer_size(), 1);
  EXPECT_EQ(m.graph().input_size(), 2);
}

TEST(OnnxGraphTest, QuantizedTensorIsReadBackAsFloat) {
  // x -> QuantizeLinear(x, s, z) -> q -> Relu -> r: asking for q adds a DequantizeLinear with
  // q's own scale and zero point.
  onnx::ModelProto m;
  m.set_ir_version(7);
  m.add_opset_import()->set_version(13);
  auto* g = m.mutable_graph();
  auto* qn = g->add_node();
  qn->set_op_type("QuantizeLinear");
  qn->add_input("x");
  qn->add_input("s");
  qn->add_input("z");
  qn->add_output("q");
  auto* rn = g->add_node();
  rn->set_op_type("Relu");
  rn->add_input("q");
  rn->add_output("r");
  g->add_input()->set_name("x");
  g->add_output()->set_name("r");
  std::string out_name;
  auto bytes = ExtractFeatureGraph(m.SerializeAsString(), "q", "q.onnx", &out_name);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  onnx::ModelProto got;
  ASSERT_TRUE(got.ParseFromString(*bytes));
  EXPECT_EQ(out_name, "q_nearlabel_float");
  ASSERT_EQ(got.graph().output_size(), 1);
  EXPECT_EQ(got.graph().output(0).name(), out_name);
  ASSERT_EQ(got.graph().node_size(), 2);  // the Relu is pruned
  const auto& dq = got.graph().node(1);
  EXPECT_EQ(dq.op_type(), "DequantizeLinear");
  ASSERT_EQ(dq.input_size(), 3);
  EXPECT_EQ(dq.input(0), "q");
  EXPECT_EQ(dq.input(1), "s");
  EXPECT_EQ(dq.input(2), "z");
  // A float tensor is left as it is.
  ASSERT_TRUE(ExtractFeatureGraph(m.SerializeAsString(), "r", "q.onnx", &out_name).ok());
  EXPECT_EQ(out_name, "r");
}

TEST(OnnxGraphTest, MissingTensorAndGarbageAreClearErrors) {
  auto missing = ExtractFeatureGraph(ChainModel(), "pool5", "chain.onnx");
  EXPECT_EQ(missing.status().code(), Status::Code::kNotFound);
  EXPECT_NE(missing.status().message().find("'pool5'"), std::string::npos);
  auto garbage = ExtractFeatureGraph("this is not protobuf \xff\xff\xff", "a", "junk.onnx");
  EXPECT_EQ(garbage.status().code(), Status::Code::kCorruption);
  EXPECT_NE(garbage.status().message().find("junk.onnx"), std::string::npos);
}

}  // namespace
}  // namespace nearlabel
