#include "common/data_uri.h"

#include <openssl/evp.h>

namespace nearlabel {

std::string DataUri(const std::string& bytes, const std::string& mime) {
  if (bytes.empty()) return "";
  std::string b64(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()),
                                static_cast<int>(bytes.size()));
  b64.resize(static_cast<size_t>(n));
  return "data:" + mime + ";base64," + b64;
}

}  // namespace nearlabel
