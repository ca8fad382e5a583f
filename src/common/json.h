// Parsing JSON from outside (label files, manifest lines, uploaded or stored metadata, SQL
// arguments) with a nesting limit. nlohmann::json parses iteratively but dumps and compares
// recursively, so a value nested 100,000 deep (200 KB of brackets) overflowed the stack
// when it was printed; SQLite's own JSON functions stop at 1,000 levels, which made such a
// label fail the store's CHECK and abort a whole ingest.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace nearlabel {

// The deepest nesting of arrays and objects accepted anywhere (real label files use < 10).
constexpr int kMaxJsonDepth = 200;

// True when `text` opens more than `max_depth` arrays/objects inside each other (brackets in
// strings do not count). Linear, no allocation; the text need not be valid JSON.
bool JsonNestingExceeds(std::string_view text, int max_depth = kMaxJsonDepth);

// `text` parsed as JSON, or a discarded value (is_discarded()) when it is not JSON or is
// nested deeper than kMaxJsonDepth; *too_deep (optional) tells the two apart. Never throws.
nlohmann::json ParseJson(std::string_view text, bool* too_deep = nullptr);

// True when `text` is well-formed UTF-8 (no overlong forms, surrogates or code points past
// U+10FFFF): what JSON text, and so every label and metadata value, must be.
bool IsValidUtf8(std::string_view text);

// True when `text` can be a JSON string's value as nearlabel stores and matches labels:
// UTF-8 (IsValidUtf8) without NUL bytes. The one rule for labels, metadata and --within.
bool IsJsonText(std::string_view text);

// The message for a value refused by ParseJson for its depth.
std::string JsonTooDeepMessage();

}  // namespace nearlabel
