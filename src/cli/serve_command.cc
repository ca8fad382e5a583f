#include "cli/cli.h"

namespace nearlabel::cli {
namespace {

namespace {
int g_stop_pipe[2] = {-1, -1};  // serve: signal handler -> waiter thread
}  // namespace

// ---------------------------------------------------------------- serve
struct ServeArgs {
  std::string store, model;
  std::string anomaly = "default";  // anomaly model for /v1/anomaly ("" or "none": none)
  bool anomaly_given = false;       // --anomaly was on the command line: missing is an error
  ServerOptions opt;
  double max_megapixels = 50;
  double max_upload_mb = 20;
};

// The anomaly model `serve` offers: --anomaly NAME, or "default" when the store has one.
Result<ServerAnomaly> OpenServerAnomaly(const ServeArgs& a, Store& store,
                                        const CollectionInfo& info, const Global& g) {
  ServerAnomaly out;
  if (a.anomaly.empty() || a.anomaly == "none") return out;
  auto model = LoadAnomalyModel(store, a.anomaly, info);
  if (!model.ok()) {
    if (model.status().code() == Status::Code::kNotFound && !a.anomaly_given) return out;
    return model.status();
  }
  std::string sha;
  NL_ASSIGN_OR_RETURN(out.patch_embedder, OpenPatchEmbedder(a.store, info, g, true, &sha));
  out.model = std::make_unique<AnomalyModel>(std::move(*model));
  return out;
}

int RunServe(ServeArgs a, const Global& g) {
  if (a.opt.token.empty()) {
    if (const char* t = std::getenv("NEARLABEL_TOKEN")) a.opt.token = t;
  }
  a.opt.max_pixels = static_cast<int64_t>(a.max_megapixels * 1e6);
  a.opt.max_upload_bytes = static_cast<size_t>(a.max_upload_mb * 1024 * 1024);
  a.opt.store_location = a.store;
  // Without a token the server never writes: open the store read-only.
  auto opened = OpenIngested(
      a.store, "majority", a.opt.token.empty() ? Store::Mode::kReadOnly : Store::Mode::kReadWrite);
  if (!opened.ok()) return Fail(opened.status());
  auto embedder = OpenEmbedderForStore(a.store, &opened->info, a.model, g, true);
  if (!embedder.ok()) return Fail(embedder.status());
  auto anomaly = OpenServerAnomaly(a, *opened->store, opened->info, g);
  if (!anomaly.ok()) return Fail(anomaly.status().WithContext("--anomaly"));
  const std::string anomaly_line =
      anomaly->model ? ", anomaly model '" + anomaly->model->name + "'" : std::string();
  auto server =
      Server::Create(std::move(opened->store), std::move(*embedder), a.opt, std::move(*anomaly));
  if (!server.ok()) return Fail(server.status());
  if (!(*server)->notice().empty()) {
    std::fprintf(stderr, "nearlabel: notice: %s\n", (*server)->notice().c_str());
  }
  Status st = (*server)->Bind();
  if (!st.ok()) return Fail(st);
  // SIGINT/SIGTERM stop the server cleanly (it saves the index it changed). Any thread may
  // take the signal (OpenBLAS starts its own), so the handler only writes a byte to a pipe;
  // a waiter thread reads it and stops the server.
  if (::pipe(g_stop_pipe) != 0) return Fail(Status::IOError("cannot create a pipe"));
  struct sigaction sa {};
  sa.sa_handler = [](int) {
    const char b = 1;
    [[maybe_unused]] ssize_t n = ::write(g_stop_pipe[1], &b, 1);
  };
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::thread waiter([&] {
    char b;
    while (::read(g_stop_pipe[0], &b, 1) < 0 && errno == EINTR) {
    }
    (*server)->Stop();
  });
  std::printf("nearlabel: serving %s on http://%s:%d/ (%s%s)\n", MaskedLocation(a.store).c_str(),
              a.opt.host.c_str(), (*server)->port(),
              a.opt.token.empty() ? "read-only" : "writes need the bearer token",
              anomaly_line.c_str());
  std::fflush(stdout);
  st = (*server)->Run();
  const char b = 0;  // the server stopped otherwise: end the waiter
  [[maybe_unused]] ssize_t n = ::write(g_stop_pipe[1], &b, 1);
  waiter.join();
  if (!st.ok()) return Fail(st.WithContext("saving the index on exit"));
  return 0;
}

}  // namespace

void AddServeCommand(CLI::App& app, const Global& g, Runner* run) {
  static ServeArgs va;
  auto* serve = app.add_subcommand(
      "serve",
      "Serve a store over HTTP: a web page at / (drop an image, see its label and neighbours; "
      "browse labels) and the JSON API under /v1 (classify, search, items, stats)");
  serve->add_option("store", va.store, kStoreHelp)->required();
  serve->add_option("--host", va.opt.host, "Address to listen on")->capture_default_str();
  serve->add_option("--port", va.opt.port, "Port (0: any free port, printed at start)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  serve->add_option("--token", va.opt.token,
                    "Bearer token that POST /v1/items and DELETE /v1/items/ID require "
                    "(default $NEARLABEL_TOKEN; without one the server is read-only)");
  serve->add_option("--label", va.opt.label_field,
                    "Field classify predicts (default: the store's label field)");
  serve->add_option("--model", va.model, "Model (default: the store's)");
  serve
      ->add_option("--anomaly", va.anomaly,
                   "Anomaly model behind POST /v1/anomaly and the page's Anomaly tab (`anomaly "
                   "fit --name`; default: 'default' when the store has it; none: no anomaly "
                   "scoring)")
      ->each([](const std::string&) { va.anomaly_given = true; });
  serve->add_option("--cache", va.opt.cache_dir,
                    "PostgreSQL stores: a directory of this node's own for its vector segment "
                    "and HNSW index (each named by the change it holds), so a restart catches "
                    "up instead of reloading and rebuilding (default: in memory). SQLite stores "
                    "keep theirs next to the file");
  serve->add_flag("--show-paths", va.opt.show_paths,
                  "Answer each row's full stored path in `source` (default: paths relative to "
                  "the directory all rows share, so clients do not learn the server's files)");
  serve
      ->add_option("--threads", va.opt.threads,
                   "Worker threads that run requests (decode, model, search); 0: one per core, "
                   "the fastest (the model runs one image at a time on every core). "
                   "Connections themselves cost no thread")
      ->capture_default_str()
      ->check(CLI::Range(0, 256));
  serve->add_option("--max-upload-mb", va.max_upload_mb, "Largest image upload, MiB (413 above)")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 4096.0));
  serve
      ->add_option("--max-batch", va.opt.max_batch_images,
                   "Most images one POST /v1/classify/batch may carry (413 above; the page "
                   "sends larger drops in several requests)")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  serve
      ->add_option("--max-megapixels", va.max_megapixels,
                   "Largest declared image size, megapixels (413 above, checked before decoding)")
      ->capture_default_str()
      ->check(CLI::Range(0.000001, 1000.0));

  serve->callback([&g, run] { *run = [&g] { return RunServe(va, g); }; });
}

}  // namespace nearlabel::cli
