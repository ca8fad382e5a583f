// `data:` URIs, so that a page can carry its images inline (the HTML reports, the server's
// heat maps) and work offline.
#pragma once

#include <string>

namespace nearlabel {

// "data:<mime>;base64,<bytes in base64>", or "" for empty bytes.
std::string DataUri(const std::string& bytes, const std::string& mime);

}  // namespace nearlabel
