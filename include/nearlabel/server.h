// `nearlabel serve`: one process holding a store, its index and the model, answering the HTTP
// API (JSON) and serving the web page. See README ("HTTP API") for the routes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "nearlabel/anomaly.h"
#include "nearlabel/model.h"
#include "nearlabel/status.h"
#include "nearlabel/store.h"

namespace nearlabel {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (see Server::port)
  // Bearer token for POST /v1/items and DELETE /v1/items/{id}; "" makes the server read-only.
  std::string token;
  size_t max_upload_bytes = 20u << 20;  // larger images get 413
  // POST /v1/classify/batch: at most this many images, and bytes in all, per request (413).
  size_t max_batch_images = 64;
  size_t max_batch_bytes = 64u << 20;
  int64_t max_pixels = 50'000'000;  // larger declared image sizes get 413, before decoding
  std::string label_field;          // "" = the store's label field, else "label"
  // Request worker threads; 0: one per core. More than the cores only adds contention: the
  // model runs one image at a time on every core (bench/serve_load.sh: p99 at 100 classify/s
  // was 156 ms with 8 workers, 32 ms with 2, on 2 cores).
  int threads = 0;
  // Answer each row's full stored path in `source`; by default sources are relative to the
  // directory every row shares, so an unauthenticated client does not learn server paths.
  bool show_paths = false;
  // Where the store lives (its unmasked location: a file path or a PostgreSQL URI): the
  // collection opens its own read connection there. "": the store's location() (which masks
  // a PostgreSQL password).
  std::string store_location;
  // PostgreSQL: a directory of this node's own (segment, index, change id), so a restart
  // catches up from where it stopped instead of reloading the table. "": in memory.
  std::string cache_dir;
};

// Anomaly scoring for POST /v1/anomaly and the page's Anomaly tab: a fitted model and the
// store's model as a patch embedder (PatchFeatureCard). Both null: the server has none.
struct ServerAnomaly {
  std::unique_ptr<AnomalyModel> model;
  std::unique_ptr<Embedder> patch_embedder;
};

class Server {
 public:
  ~Server();
  // Loads the store's rows and index. `store` must be open read-write when a token is set.
  // `embedder` must match the store's model, and `anomaly` (optional) the store and its model
  // (the caller checks both).
  static Result<std::unique_ptr<Server>> Create(std::unique_ptr<Store> store,
                                                std::unique_ptr<Embedder> embedder,
                                                const ServerOptions& options,
                                                ServerAnomaly anomaly = {});
  // Binds the port (Status on failure: port in use, bad host). After it, port() is the bound
  // port and Run serves.
  Status Bind();
  // Serves until Stop(); then saves the index if the server changed it.
  Status Run();
  // Stops Run from any thread (or a signal handler's helper thread).
  void Stop();
  int port() const;

  // Answers one raw HTTP/1.1 request (bytes as a client would send them) without a socket,
  // through the same parsing, routes and handlers as Run: for fuzzing and tests. Returns the
  // raw response. Thread-safe like a request served by Run; needs no Bind.
  std::string HandleRawRequest(const std::string& request);
  // One line for the log when Create found something to say (e.g. index unusable).
  const std::string& notice() const;

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace nearlabel
