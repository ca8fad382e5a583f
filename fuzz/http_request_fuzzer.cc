// libFuzzer target: raw HTTP requests through the server's parsing, routes and handlers
// (path, query string, headers, multipart bodies), with a real store and model behind them.
// NEARLABEL_FUZZ_STORE names a store to serve (tests/fuzz.sh makes a small one); it is
// opened read-write with the token "fuzz-token", so writes are reachable too.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "nearlabel/model.h"
#include "nearlabel/server.h"
#include "nearlabel/store.h"

namespace {
std::unique_ptr<nearlabel::Server> server;

[[noreturn]] void Die(const std::string& why) {
  std::fprintf(stderr, "http_request_fuzzer: %s\n", why.c_str());
  std::exit(1);
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* path = std::getenv("NEARLABEL_FUZZ_STORE");
  if (path == nullptr) Die("set NEARLABEL_FUZZ_STORE to a store (tests/fuzz.sh makes one)");
  auto store = nearlabel::OpenStore(path, nearlabel::Store::Mode::kReadWrite);
  if (!store.ok()) Die(store.status().ToString());
  auto info = (*store)->GetCollection();
  if (!info.ok() || !*info) Die("the store is empty");
  auto card = nearlabel::FindModel((*info)->model, nearlabel::ModelSearchDirs({}));
  if (!card.ok()) Die(card.status().ToString());
  nearlabel::EmbedderOptions eo;
  eo.threads = 1;
  auto embedder = nearlabel::CreateEmbedder(*card, eo, nullptr);
  if (!embedder.ok()) Die(embedder.status().ToString());
  nearlabel::ServerOptions so;
  so.token = "fuzz-token";
  so.store_location = path;
  so.max_upload_bytes = 1u << 20;
  so.max_pixels = 4'000'000;
  auto s = nearlabel::Server::Create(std::move(*store), std::move(*embedder), so);
  if (!s.ok()) Die(s.status().ToString());
  server = std::move(*s);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string request(reinterpret_cast<const char*>(data), size);
  const std::string response = server->HandleRawRequest(request);
  // Whatever came in, what goes out is an HTTP response or nothing (a request cut short).
  if (!response.empty() && response.compare(0, 9, "HTTP/1.1 ") != 0) __builtin_trap();
  return 0;
}
