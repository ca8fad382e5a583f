// libFuzzer target: a dataset manifest's text, read as CSV, TSV and JSON Lines in turn.
#include <cstddef>
#include <cstdint>
#include <string>

#include "dataset/readers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (const char* name : {"/nonexistent-fuzz-dir/m.csv", "/nonexistent-fuzz-dir/m.tsv",
                           "/nonexistent-fuzz-dir/m.jsonl"}) {
    nearlabel::DatasetListing listing;
    (void)nearlabel::ParseManifest(text, name, &listing);
    // No image exists under the fake folder: every row must become a problem, never an item.
    if (!listing.items.empty()) __builtin_trap();
  }
  return 0;
}
