// SHA-256 of byte buffers and files (OpenSSL EVP), as lowercase hex.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "nearlabel/status.h"

namespace nearlabel {

// Thread-safe.
std::string Sha256Hex(const void* data, size_t size);
inline std::string Sha256Hex(const std::string& s) { return Sha256Hex(s.data(), s.size()); }
// Streams the file through the hash (bounded memory). Thread-safe.
Result<std::string> Sha256File(const std::string& path);

}  // namespace nearlabel
