// libFuzzer target: one AI Hub label file's text, as ReadAiHub parses it.
#include <cstddef>
#include <cstdint>
#include <string>

#include "dataset/readers.h"
#include "nearlabel/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  nlohmann::json metadata;
  auto name = nearlabel::ParseAiHubLabel(text, {"양품", "exp1"}, &metadata);
  if (name.ok()) {
    // What ingest and the views read back from accepted metadata.
    if (name->empty()) __builtin_trap();
    (void)nearlabel::MetadataField(metadata, "quality");
    (void)nearlabel::MetadataField(metadata, "/annotations/0/attributes/categories/1");
    (void)metadata.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  return 0;
}
