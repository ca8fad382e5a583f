// libFuzzer target: a model card's JSON text.
#include <cstddef>
#include <cstdint>
#include <string>

#include "nearlabel/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto card = nearlabel::ParseModelCard(text, "/nonexistent-fuzz-dir/fuzz.card.json");
  if (card.ok()) {
    // What an accepted card promises the embedders and the preprocessing.
    const auto& p = card->preprocess;
    if (card->dims <= 0 || p.width <= 0 || p.height <= 0) __builtin_trap();
    if (card->name.empty()) __builtin_trap();
  }
  return 0;
}
