// A small RFC 4180 reader for manifests: quoted fields, doubled quotes, embedded
// separators and newlines, CRLF. Hand-written because Debian ships no C++ CSV library
// and manifests need only this much.
#pragma once

#include <string>
#include <vector>

#include "nearlabel/status.h"

namespace nearlabel {

// Splits `text` into records of fields. `separator` is ',' or '\t'. Blank lines are skipped.
// Fails on an unterminated quoted field, naming the line where it started.
Result<std::vector<std::vector<std::string>>> ParseCsv(const std::string& text, char separator);

}  // namespace nearlabel
