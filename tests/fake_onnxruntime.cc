// A shared library that presents itself as ONNX Runtime FAKE_ORT_VERSION (exports
// OrtGetApiBase, offers no API table), so cli_test.sh can check that nearlabel refuses a
// library outside the supported version range with a clear message.
#include <cstdint>

namespace {
struct ApiBase {
  const void* (*GetApi)(uint32_t version);
  const char* (*GetVersionString)();
};
const void* GetApi(uint32_t) { return nullptr; }
const char* GetVersionString() { return FAKE_ORT_VERSION; }
const ApiBase kBase{GetApi, GetVersionString};
}  // namespace

extern "C" __attribute__((visibility("default"))) const ApiBase* OrtGetApiBase() { return &kBase; }
