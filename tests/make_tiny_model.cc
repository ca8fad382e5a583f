// make_tiny_model: writes a small real ONNX model and its card, for tests that must push tens
// of thousands of images through the whole pipeline (read, decode, preprocess, ONNX Runtime,
// search) in seconds: 16 x 16 RGB input -> Conv 3x3 (16 filters, fixed pseudo-random weights)
// -> Relu; the card's feature is the mean of the Relu map over its 16 x 16 positions (16-d).
// Usage: make_tiny_model OUT_DIR   (writes OUT_DIR/tiny-test.onnx and tiny-test.card.json)
#include <cstdio>
#include <fstream>
#include <string>

#include <onnx/onnx_pb.h>

namespace {

void SetShape(onnx::ValueInfoProto* v, const char* name, int channels, int side) {
  v->set_name(name);
  auto* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  auto* shape = t->mutable_shape();
  shape->add_dim()->set_dim_param("N");
  shape->add_dim()->set_dim_value(channels);
  shape->add_dim()->set_dim_value(side);
  shape->add_dim()->set_dim_value(side);
}

std::string TinyModel() {
  onnx::ModelProto m;
  m.set_ir_version(7);
  m.set_producer_name("nearlabel make_tiny_model");
  m.add_opset_import()->set_version(13);
  auto* g = m.mutable_graph();
  g->set_name("tiny");
  auto* w = g->add_initializer();
  w->set_name("w");
  w->set_data_type(onnx::TensorProto::FLOAT);
  for (int d : {16, 3, 3, 3}) w->add_dims(d);
  uint32_t state = 12345;  // a fixed LCG: the same model on every machine
  for (int i = 0; i < 16 * 3 * 3 * 3; ++i) {
    state = state * 1664525u + 1013904223u;
    w->add_float_data(static_cast<float>(state >> 8) / static_cast<float>(1u << 24) - 0.5f);
  }
  auto* conv = g->add_node();
  conv->set_op_type("Conv");
  conv->add_input("input");
  conv->add_input("w");
  conv->add_output("conv");
  auto* pads = conv->add_attribute();
  pads->set_name("pads");
  pads->set_type(onnx::AttributeProto::INTS);
  for (int i = 0; i < 4; ++i) pads->add_ints(1);
  auto* relu = g->add_node();
  relu->set_op_type("Relu");
  relu->add_input("conv");
  relu->add_output("feat");
  SetShape(g->add_input(), "input", 3, 16);
  SetShape(g->add_output(), "feat", 16, 16);
  return m.SerializeAsString();
}

constexpr const char* kCard = R"({
  "name": "tiny-test",
  "description": "Test model written by tests/make_tiny_model.cc: Conv 3x3 (16 filters, fixed weights) + Relu on a 16x16 input; feature the mean of the map, 16-d. For pipeline tests only, not for accuracy.",
  "file": "tiny-test.onnx",
  "input": {"name": "input", "width": 16, "height": 16, "max_batch": 0},
  "preprocess": {"resize": "direct", "interpolation": "linear", "channel_order": "RGB",
                 "scale": 0.00392156862745098, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
  "feature": {"onnx_tensor": "feat", "pooling": "mean", "dims": 16}
}
)";

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_tiny_model OUT_DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  std::ofstream(dir + "/tiny-test.onnx", std::ios::binary) << TinyModel();
  std::ofstream(dir + "/tiny-test.card.json") << kCard;
  std::ifstream check(dir + "/tiny-test.card.json");
  if (!check) {
    std::fprintf(stderr, "make_tiny_model: cannot write into %s\n", dir.c_str());
    return 1;
  }
  return 0;
}
