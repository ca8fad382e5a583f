// The CLI's shared declarations: global options, the helpers every command uses, and the
// command groups (one file each, src/cli/*_command.cc) that add their subcommands to the app.
// A command parses (CLI11), calls the library, renders what it returns (cli/output.h).
#pragma once
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "cli/output.h"
#include "collection/answer_json.h"
#include "common/fs.h"
#include "common/json.h"
#include "common/sha256.h"
#include "eval/report.h"
#include "nearlabel/anomaly.h"
#include "nearlabel/check.h"
#include "nearlabel/classify.h"
#include "nearlabel/collection.h"
#include "nearlabel/dataset.h"
#include "nearlabel/image.h"
#include "nearlabel/index.h"
#include "nearlabel/ingest.h"
#include "nearlabel/model.h"
#include "nearlabel/query_eval.h"
#include "nearlabel/search.h"
#include "nearlabel/segment.h"
#include "nearlabel/server.h"
#include "nearlabel/store.h"
#include "nearlabel/vector.h"
#include "search/simd.h"

using nlohmann::json;

namespace nearlabel::cli {

constexpr const char* kDefaultModel = "mobilenetv2-12-int8";
constexpr const char* kStoreHelp =
    "Store: a SQLite file, or a PostgreSQL URI postgresql://USER@HOST:PORT/DB (password from "
    "PGPASSFILE, PGPASSWORD or the URI; never printed)";

// Options before the command name.
struct Global {
  std::vector<std::string> model_dirs;
  bool json = false;
  bool verbose = false;
  std::string backend = "auto";
  int infer_threads = 0;
  int infer_sessions = 0;
};

// What the parsed command runs (set by the command's CLI11 callback); returns the exit code.
using Runner = std::function<int()>;

// Each adds its command group's subcommands and options to `app`; the command that is parsed
// sets *run. `g` is filled by the same parse.
void AddIngestCommands(CLI::App& app, const Global& g, Runner* run);   // ingest, init
void AddQueryCommands(CLI::App& app, const Global& g, Runner* run);    // classify, search
void AddEvalCommand(CLI::App& app, const Global& g, Runner* run);      // eval
void AddAuditCommand(CLI::App& app, const Global& g, Runner* run);     // audit
void AddStoreCommands(CLI::App& app, const Global& g, Runner* run);    // sql, info, check, models
void AddAnomalyCommands(CLI::App& app, const Global& g, Runner* run);  // anomaly fit/score/eval
void AddIndexCommands(CLI::App& app, const Global& g, Runner* run);    // index build/check, delete
void AddServeCommand(CLI::App& app, const Global& g, Runner* run);     // serve

// ---- helpers (common.cc) ----
// Prints "nearlabel: error: MESSAGE" and returns exit code 1.
int Fail(const Status& st);
void PrintJson(const json& j);
json ParseMeta(const std::string& text);
Result<std::unique_ptr<Embedder>> MakeEmbedder(const ModelCard& card, const Global& g,
                                               bool few_images);
// Opens a store for a command that writes, after PRAGMA integrity_check.
Result<std::unique_ptr<Store>> OpenForWriting(const std::string& location, Store::Mode mode);
void WarnDamaged(const VectorTable& table, const Store& store);
// The store's model (or --model, which must match the store's), as an embedder.
Result<std::unique_ptr<Embedder>> OpenEmbedderForStore(const std::string& location,
                                                       const CollectionInfo* info,
                                                       const std::string& model_arg,
                                                       const Global& g, bool few_images);
// A store that has been ingested into (opened read-only unless `mode` says otherwise), with
// its collection info, and the parsed --vote: what classify, search, eval, serve and the
// anomaly commands start from. An empty store is an error that says to ingest first.
struct Ingested {
  std::unique_ptr<Store> store;
  CollectionInfo info;
  Vote vote = Vote::kMajority;
};
Result<Ingested> OpenIngested(const std::string& path, const std::string& vote_name,
                              Store::Mode mode = Store::Mode::kReadOnly);
// --m and --ef-construction, the HNSW build parameters `ingest` and `index build` share.
void AddGraphOptions(CLI::App* cmd, IndexBuildParams* p, const std::string& when);
// The store's model as a patch embedder (checked against the store like OpenEmbedderForStore).
Result<std::unique_ptr<Embedder>> OpenPatchEmbedder(const std::string& location,
                                                    const CollectionInfo& info, const Global& g,
                                                    bool few_images, std::string* sha);
// The anomaly model `name` kept in the store, checked against the store's model.
Result<AnomalyModel> LoadAnomalyModel(Store& store, const std::string& name,
                                      const CollectionInfo& info);
// Writes `text` to `path` through a temporary file and a rename.
Status WriteFileAtomically(const std::string& path, const std::string& text);

}  // namespace nearlabel::cli
