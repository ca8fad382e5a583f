// nearlabel command-line interface. Exit codes: 0 ok, 1 error, 2 usage.
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
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
#include "nearlabel/collection.h"
#include "nearlabel/segment.h"
#include "common/fs.h"
#include "common/json.h"
#include "common/sha256.h"
#include "eval/report.h"
#include "nearlabel/anomaly.h"
#include "nearlabel/check.h"
#include "nearlabel/classify.h"
#include "nearlabel/dataset.h"
#include "nearlabel/image.h"
#include "nearlabel/index.h"
#include "nearlabel/ingest.h"
#include "nearlabel/model.h"
#include "nearlabel/search.h"
#include "nearlabel/server.h"
#include "nearlabel/store.h"
#include "nearlabel/vector.h"
#include "search/simd.h"

using nlohmann::json;

namespace nearlabel::cli {
namespace {

constexpr const char* kDefaultModel = "mobilenetv2-12-int8";
std::atomic<bool> g_stop{false};
int g_stop_pipe[2] = {-1, -1};  // serve: signal handler -> waiter thread

struct Global {
  std::vector<std::string> model_dirs;
  bool json = false;
  bool verbose = false;
  std::string backend = "auto";
  int infer_threads = 0;
  int infer_sessions = 0;
};

int Fail(const Status& st) {
  std::fprintf(stderr, "nearlabel: error: %s\n", TerminalSafe(st.message()).c_str());
  return 1;
}

// Creates the embedder for `card` with the --backend and --infer-* options, printing the
// fallback notice (ONNX Runtime missing) on stderr. `few_images`: a handful of images to
// answer (classify, search), where one session using every thread gives the lowest latency
// and loads fastest; otherwise (ingest) one single-thread session per core gives throughput.
Result<std::unique_ptr<Embedder>> MakeEmbedder(const ModelCard& card, const Global& g,
                                               bool few_images) {
  EmbedderOptions opt;
  NL_ASSIGN_OR_RETURN(opt.backend, ParseBackend(g.backend));
  opt.threads = g.infer_threads;
  opt.sessions = g.infer_sessions > 0 ? g.infer_sessions : few_images ? 1 : 0;
  std::string notice;
  auto e = CreateEmbedder(card, opt, &notice);
  if (!notice.empty()) std::fprintf(stderr, "nearlabel: notice: %s\n", notice.c_str());
  if (e.ok() && g.verbose) {
    std::fprintf(stderr, "model %s on %s, batch up to %d\n", card.name.c_str(),
                 (*e)->backend().c_str(), (*e)->max_batch());
  }
  return e;
}

void PrintJson(const json& j) {
  std::printf("%s\n", j.dump(2, ' ', false, json::error_handler_t::replace).c_str());
}

json ParseMeta(const std::string& text) { return ParseJson(text); }

// Opens a store for a command that writes rows or files (ingest, index build, delete, serve
// with a token, anomaly fit): a store that fails SQLite's integrity check is refused before
// anything is written (re-ingesting into a damaged UNIQUE index stored duplicates).
Result<std::unique_ptr<Store>> OpenForWriting(const std::string& location, Store::Mode mode) {
  NL_ASSIGN_OR_RETURN(auto store, OpenStore(location, mode));
  NL_RETURN_IF_ERROR(store->CheckIntegrity());
  return store;
}

// Says on stderr that damaged rows were left out of `table` (nothing when none were).
void WarnDamaged(const VectorTable& table, const Store& store) {
  const std::string notice = DamagedRowsNotice(table, store.location());
  if (!notice.empty()) std::fprintf(stderr, "nearlabel: warning: %s\n", notice.c_str());
}

std::string JoinWhere(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) {
    if (p.empty()) continue;
    out += (out.empty() ? "(" : " AND (") + p + ")";
  }
  return out;
}

// Loads the store's model (or `model_arg` when given) and checks it matches the store.
Result<std::unique_ptr<Embedder>> OpenEmbedderForStore(const std::string& location,
                                                       const CollectionInfo* info,
                                                       const std::string& model_arg,
                                                       const Global& g, bool few_images) {
  std::string name = model_arg.empty() ? info->model : model_arg;
  NL_ASSIGN_OR_RETURN(ModelCard card, FindModel(name, ModelSearchDirs(g.model_dirs)));
  NL_ASSIGN_OR_RETURN(std::string sha, Sha256File(card.onnx_path));
  if (card.name != info->model || sha != info->model_sha256 || card.dims != info->dims) {
    return Status::Mismatch("store " + location + " was built with model '" + info->model + "' (" +
                            std::to_string(info->dims) + "-d), not '" + card.name + "' (" +
                            std::to_string(card.dims) + "-d" +
                            (sha != info->model_sha256 ? ", different ONNX file" : "") + ")");
  }
  return MakeEmbedder(card, g, few_images);
}

// ---------------------------------------------------------------- init
int RunInit(const std::string& uri, const Global& g) {
  if (!IsPostgresUri(uri)) {
    return Fail(Status::InvalidArgument(
        uri + " is not a postgresql:// URI; a SQLite store is created by `nearlabel ingest`"));
  }
  std::vector<std::string> applied;
  auto version = RunPostgresMigrations(uri, &applied);
  if (!version.ok()) return Fail(version.status());
  if (g.json) {
    PrintJson({{"store", MaskedLocation(uri)}, {"schema_version", *version}, {"applied", applied}});
  } else if (applied.empty()) {
    std::printf("%s: schema version %d, up to date\n", MaskedLocation(uri).c_str(), *version);
  } else {
    std::printf("%s: schema version %d (applied %zu migration%s)\n", MaskedLocation(uri).c_str(),
                *version, applied.size(), applied.size() == 1 ? "" : "s");
  }
  return 0;
}

constexpr const char* kStoreHelp =
    "Store: a SQLite file, or a PostgreSQL URI postgresql://USER@HOST:PORT/DB (password from "
    "PGPASSFILE, PGPASSWORD or the URI; never printed)";

// ---------------------------------------------------------------- ingest
struct IngestArgs {
  std::string store, dataset, model, layout = "auto", job;
  int batch = 32, threads = 0, lease = 300;
  bool index = false;
  IndexBuildParams index_params;
};

int RunIngest(IngestArgs a, const Global& g) {
  // Everything that can fail on the arguments is checked before the store file is created.
  auto layout = ParseDatasetLayout(a.layout);
  if (!layout.ok()) return Fail(layout.status());
  auto listing = ListDataset(a.dataset, *layout);
  if (!listing.ok()) return Fail(listing.status());
  if (listing->items.empty()) {
    for (const auto& p : listing->problems) {
      std::fprintf(stderr, "  %s: %s\n", TerminalSafe(p.path).c_str(),
                   TerminalSafe(p.reason).c_str());
    }
    return Fail(Status::NotFound("no images found in " + a.dataset + " (layout " +
                                 DatasetLayoutName(listing->layout) + ")"));
  }
  std::string model = a.model;
  std::error_code ec;
  if (model.empty() && (IsPostgresUri(a.store) || std::filesystem::exists(a.store, ec))) {
    auto existing = OpenStore(a.store, Store::Mode::kReadOnly);
    if (existing.ok()) {
      auto info = (*existing)->GetCollection();
      if (!info.ok()) return Fail(info.status());
      if (*info) model = (*info)->model;
    } else if (existing.status().code() != Status::Code::kNotFound) {
      return Fail(existing.status());
    }
  }
  if (model.empty()) model = kDefaultModel;
  auto card = FindModel(model, ModelSearchDirs(g.model_dirs));
  if (!card.ok()) return Fail(card.status());
  auto embedder = MakeEmbedder(*card, g, false);
  if (!embedder.ok()) return Fail(embedder.status());
  auto sha = Sha256File(card->onnx_path);
  if (!sha.ok()) return Fail(sha.status());
  auto store = OpenForWriting(a.store, Store::Mode::kCreate);
  if (!store.ok()) return Fail(store.status());
  CollectionInfo info;
  info.model = card->name;
  info.model_sha256 = *sha;
  info.dims = card->dims;
  // The field classify and eval predict unless told otherwise.
  const json& first = listing->items.front().metadata;
  info.label_field = listing->layout == DatasetLayout::kAiHub ? "quality"
                     : first.contains("label")                ? "label"
                     : first.contains("class")                ? "class"
                                                              : "label";
  Status st = (*store)->EnsureCollection(info);
  if (!st.ok()) return Fail(st);
  if (listing->layout == DatasetLayout::kAiHub) {
    st = (*store)->EnsureAiHubView();
    if (!st.ok()) return Fail(st);
  }

  std::signal(SIGINT, [](int) {
    g_stop = true;
    std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C kills at once; committed rows stay
  });
  std::signal(SIGTERM, [](int) { g_stop = true; });
  ProgressBar bar("ingest");
  IngestOptions opt;
  opt.batch_size = a.batch;
  opt.prep_threads = a.threads;
  opt.job = a.job.empty() ? std::filesystem::path(listing->root).filename().string() : a.job;
  opt.lease_seconds = a.lease;
  IngestQueue* queue = (*store)->ingest_queue();
  auto progress = [&](size_t done, size_t total) { bar.Update(done, total); };
  // A shared store (PostgreSQL) is drained through its job queue, so that any number of
  // workers can run this same command at once.
  auto rep = queue ? IngestShared(*listing, **embedder, **store, *queue, opt, progress, &g_stop)
                   : Ingest(*listing, **embedder, **store, opt, progress, &g_stop);
  bar.Finish();
  if (!rep.ok()) return Fail(rep.status());
  const std::string where = (*store)->location();  // a URI's password masked
  // An existing index follows every ingest; --index creates one. Shared stores keep no
  // index file: each server builds its index in memory.
  std::string index_summary;
  if (!rep->interrupted && !queue) {
    a.index_params.threads = a.threads;
    auto summary = UpdateStoreIndex(**store, a.index, a.index_params);
    if (!summary.ok()) return Fail(summary.status().WithContext("rows stored, index not updated"));
    index_summary = *summary;
  }
  auto rows = (*store)->Count();
  if (g.json) {
    json j = {{"store", where},
              {"dataset", listing->root},
              {"layout", DatasetLayoutName(listing->layout)},
              {"model", card->name},
              {"backend", (*embedder)->backend()},
              {"listed", rep->listed},
              {"inserted", rep->inserted},
              {"already_stored", rep->already_stored},
              {"duplicates", rep->duplicates},
              {"failed", rep->failed},
              {"problems", json::array()},
              {"rows", rows.ok() ? *rows : -1},
              {"seconds", rep->seconds},
              {"interrupted", rep->interrupted},
              {"index", index_summary}};
    if (queue) {
      j["job"] = opt.job;
      j["batches"] = rep->batches;
      j["abandoned_batches"] = rep->abandoned_batches;
      j["embed_seconds"] = rep->embed_seconds;
      j["store_seconds"] = rep->store_seconds;
    }
    for (const auto& p : rep->problems)
      j["problems"].push_back({{"path", p.path}, {"reason", p.reason}});
    PrintJson(j);
  } else {
    for (const auto& p : rep->problems)
      std::printf("skipped %s: %s\n", TerminalSafe(p.path).c_str(), TerminalSafe(p.reason).c_str());
    const double rate = rep->seconds > 0 ? (rep->inserted) / rep->seconds : 0;
    std::printf(
        "ingest %s (%s layout) -> %s with %s\n"
        "  %zu images listed: %zu inserted, %zu already stored, %zu duplicate content, %zu "
        "failed; %zu other problems\n"
        "  %.1f s (%.1f images/s embedded); store now holds %lld rows\n",
        listing->root.c_str(), DatasetLayoutName(listing->layout), where.c_str(),
        card->name.c_str(), rep->listed, rep->inserted, rep->already_stored, rep->duplicates,
        rep->failed, rep->problems.size() - rep->failed - rep->duplicates, rep->seconds, rate,
        static_cast<long long>(rows.ok() ? *rows : -1));
    if (!index_summary.empty()) std::printf("  %s\n", index_summary.c_str());
    if (queue) {
      std::printf(
          "  job '%s': this worker committed %zu batches; embedding %.1f s, database %.2f s "
          "(%.1f%% of embedding)%s\n",
          opt.job.c_str(), rep->batches, rep->embed_seconds, rep->store_seconds,
          rep->embed_seconds > 0 ? 100 * rep->store_seconds / rep->embed_seconds : 0.0,
          rep->abandoned_batches
              ? (", " + std::to_string(rep->abandoned_batches) + " claims lost and requeued")
                    .c_str()
              : "");
    }
  }
  if (rep->failed > 0) {
    std::fprintf(stderr,
                 "nearlabel: warning: %zu images could not be read and were not stored (each is "
                 "listed with its reason); fix them and run the same command again to add them\n",
                 rep->failed);
  }
  if (rep->interrupted) {
    std::fprintf(stderr,
                 "nearlabel: interrupted; every committed batch is stored. Run the same command "
                 "again to finish.\n");
    return 1;
  }
  return 0;
}

// A store that has been ingested into (opened read-only unless `mode` says otherwise), with
// its collection info, and the parsed --vote: what classify, search, eval, serve and the
// anomaly commands start from. An empty store is an error that says to ingest first.
struct Ingested {
  std::unique_ptr<Store> store;
  CollectionInfo info;
  Vote vote = Vote::kMajority;
};

Result<Ingested> OpenIngested(const std::string& path, const std::string& vote_name,
                              Store::Mode mode = Store::Mode::kReadOnly) {
  Ingested r;
  NL_ASSIGN_OR_RETURN(r.vote, ParseVote(vote_name));
  NL_ASSIGN_OR_RETURN(
      r.store, mode == Store::Mode::kReadOnly ? OpenStore(path, mode) : OpenForWriting(path, mode));
  NL_ASSIGN_OR_RETURN(auto info, r.store->GetCollection());
  if (!info)
    return Status::InvalidArgument("store " + MaskedLocation(path) + " is empty: ingest first");
  r.info = *info;
  return r;
}

// ---------------------------------------------------------------- classify / search
struct QueryArgs {
  std::string store, model, within, where, vote = "majority", label;
  std::vector<std::string> images;
  int k = 0;
  int ef = 0;
  bool exact = false;
  bool reject = false;
  double reject_quantile = 0.97;
};

// Prints one answer as text (the JSON shape is AnswerJson's, shared with the server).
void PrintAnswer(const std::string& image, const Collection::Classified& c, bool classify,
                 const std::string& label_field, int k, Vote vote) {
  const std::string path = TerminalSafe(image);
  if (classify && c.unknown) {
    std::printf("%s: %s = unknown (%s)\n", path.c_str(), TerminalSafe(label_field).c_str(),
                TerminalSafe(c.rejected_why).c_str());
  } else if (classify) {
    const std::string& label = c.prediction.label;
    std::printf("%s: %s = %s (confidence %.3f, k=%d, %s vote)\n", path.c_str(),
                TerminalSafe(label_field).c_str(),
                label.empty() ? "(none)" : TerminalSafe(label).c_str(), c.prediction.confidence, k,
                VoteName(vote));
  } else {
    std::printf("%s: %zu nearest of %zu rows\n", path.c_str(), c.answer.neighbors.size(),
                c.answer.candidates);
  }
  std::vector<std::vector<std::string>> rows;
  for (size_t i = 0; i < c.answer.neighbors.size(); ++i) {
    const AnswerRow& r = c.answer.neighbors[i];
    rows.push_back({std::to_string(i + 1), std::to_string(r.id), FormatDouble(r.distance, 4),
                    c.labels[i], r.source});
  }
  PrintTable({"rank", "id", "distance", label_field, "source"}, rows);
}

int RunQuery(const QueryArgs& a, const Global& g, bool classify) {
  const auto t_open = std::chrono::steady_clock::now();
  auto opened = OpenIngested(a.store, a.vote);
  if (!opened.ok()) return Fail(opened.status());
  const CollectionInfo& info = opened->info;
  const Vote vote = opened->vote;
  std::string within_sql;
  if (!a.within.empty()) {
    auto w = WithinToSql(a.within);
    if (!w.ok()) return Fail(w.status());
    within_sql = *w;
  }
  CollectionOptions copt;
  copt.use_index = !a.exact;
  // A few queries: read the nodes a walk visits rather than map the file (hnsw_index.cc).
  copt.index_access = a.images.size() <= 64 ? HnswIndex::Access::kRead : HnswIndex::Access::kMapped;
  auto collection = Collection::Open(a.store, copt);
  if (!collection.ok()) return Fail(collection.status());
  const CollectionState cs = (*collection)->state();
  if (!cs.notices.empty()) std::fprintf(stderr, "nearlabel: notice: %s", cs.notices.c_str());
  if (g.verbose && !cs.log.empty()) std::fprintf(stderr, "nearlabel: %s", cs.log.c_str());
  const auto t_model = std::chrono::steady_clock::now();
  auto embedder = OpenEmbedderForStore(a.store, &info, a.model, g, a.images.size() < 8);
  if (!embedder.ok()) return Fail(embedder.status());
  const std::string label_field = !a.label.empty()           ? a.label
                                  : info.label_field.empty() ? "label"
                                                             : info.label_field;
  QueryOptions q;
  q.k = a.k > 0 ? a.k : (classify ? 5 : 10);
  q.ef = a.ef;
  q.exact = a.exact;
  q.where_sql = JoinWhere({within_sql, a.where});
  std::optional<RejectThresholds> reject;
  if (classify && a.reject) {
    // Calibrated on the rows this query may answer from (leave-one-out, one sgemm pass), and
    // cached in the store until those rows or their labels change.
    std::string how;
    auto r = CachedRejection(*opened->store, a.store, q.where_sql, label_field,
                             a.reject_quantile, &how);
    if (!r.ok()) return Fail(r.status().WithContext("--reject"));
    reject = std::move(*r);
    if (g.verbose) std::fprintf(stderr, "nearlabel: rejection thresholds %s\n", how.c_str());
  }
  AnswerJsonOptions jo;
  jo.classify = classify;
  jo.label_field = label_field;
  jo.k = q.k;
  jo.vote = vote;

  const auto t_query = std::chrono::steady_clock::now();
  auto files = EmbedFiles(a.images, **embedder);
  int failures = 0;
  json out = json::array();
  for (const auto& f : files) {
    if (!f.status.ok()) {
      std::fprintf(stderr, "nearlabel: error: %s: %s\n", TerminalSafe(f.path).c_str(),
                   TerminalSafe(f.status.message()).c_str());
      ++failures;
      continue;
    }
    auto c = (*collection)->Classify(f.embedding.data(), q, label_field, vote,
                                     reject ? &*reject : nullptr);
    if (!c.ok()) return Fail(c.status());
    if (g.verbose) {
      std::fprintf(stderr, "%s: %s, ef %d, %zu distances\n", TerminalSafe(f.path).c_str(),
                   c->answer.plan.c_str(), c->answer.stats.ef_used, c->answer.stats.distances);
    }
    if (g.json) {
      json r = AnswerJson(*c, jo);
      r["image"] = f.path;
      out.push_back(std::move(r));
    } else {
      PrintAnswer(f.path, *c, classify, label_field, q.k, vote);
    }
  }
  if (g.json) PrintJson(out);
  if (g.verbose) {
    auto ms = [](auto from, auto to) {
      return std::chrono::duration<double, std::milli>(to - from).count();
    };
    const auto now = std::chrono::steady_clock::now();
    std::fprintf(stderr,
                 "timing: store open (%zu rows, segment %s, index %zu rows) %.1f ms; model loaded "
                 "%.1f ms; answer (read, decode, embed, search, print) for %zu image(s) %.1f ms\n",
                 cs.rows, cs.segment.empty() ? "in memory" : cs.segment.c_str(), cs.index_rows,
                 ms(t_open, t_model), ms(t_model, t_query), a.images.size(), ms(t_query, now));
  }
  return failures ? 1 : 0;
}

// --m and --ef-construction, the HNSW build parameters `ingest` and `index build` share.
void AddGraphOptions(CLI::App* cmd, IndexBuildParams* p, const std::string& when) {
  cmd->add_option("--m", p->m, "HNSW graph degree: higher = better recall, more memory" + when)
      ->capture_default_str()
      ->check(CLI::Range(4, 128));
  cmd->add_option("--ef-construction", p->ef_construction,
                  "HNSW candidate list while building: higher = better graph, slower build" + when)
      ->capture_default_str()
      ->check(CLI::Range(8, 4096));
}

// ---------------------------------------------------------------- serve
struct ServeArgs {
  std::string store, model;
  std::string anomaly = "default";  // anomaly model for /v1/anomaly ("" or "none": none)
  bool anomaly_given = false;       // --anomaly was on the command line: missing is an error
  ServerOptions opt;
  double max_megapixels = 50;
  double max_upload_mb = 20;
};

Result<std::unique_ptr<Embedder>> OpenPatchEmbedder(const std::string& location,
                                                    const CollectionInfo& info, const Global& g,
                                                    bool few_images, std::string* sha);
Result<AnomalyModel> LoadAnomalyModel(Store& store, const std::string& name,
                                      const CollectionInfo& info);

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

// ---------------------------------------------------------------- index / delete
struct IndexArgs {
  std::string store;
  IndexBuildParams params;
  int sample = 200, k = 10, ef = 0;
};

int RunIndexBuild(const IndexArgs& a, const Global& g) {
  auto store = OpenForWriting(a.store, Store::Mode::kReadWrite);
  if (!store.ok()) return Fail(store.status());
  const auto t0 = std::chrono::steady_clock::now();
  auto index = BuildStoreIndex(**store, a.params);
  if (!index.ok()) return Fail(index.status());
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto state = ReadIndexState(**store);
  if (!state.ok()) return Fail(state.status());
  if (g.json) {
    PrintJson({{"store", MaskedLocation(a.store)},
               {"file", state->file},
               {"rows", (*index)->size()},
               {"m", a.params.m},
               {"ef_construction", a.params.ef_construction},
               {"seconds", s},
               {"memory_bytes", (*index)->MemoryBytes()}});
  } else {
    std::printf("index built over %zu rows in %.1f s (m=%d, ef-construction=%d): %s, %.1f MB\n",
                (*index)->size(), s, a.params.m, a.params.ef_construction, state->file.c_str(),
                static_cast<double>((*index)->MemoryBytes()) / 1e6);
  }
  return 0;
}

// Recall@k of the index against exact search, on a sample of stored rows used as queries
// (the query row itself counts: it is its own nearest neighbour in both).
int RunIndexCheck(const IndexArgs& a, const Global& g) {
  auto store = OpenStore(a.store, Store::Mode::kReadOnly);
  if (!store.ok()) return Fail(store.status());
  IndexCatchUp cu;
  auto index = OpenStoreIndex(**store, SIZE_MAX, &cu);
  if (!index.ok()) return Fail(index.status());
  auto table = (*store)->LoadVectors("");
  if (!table.ok()) return Fail(table.status());
  WarnDamaged(*table, **store);
  const size_t n = table->size();
  const size_t sample = std::min<size_t>(static_cast<size_t>(a.sample), n);
  size_t found = 0, total = 0;
  double graph_ms = 0, exact_ms = 0;
  for (size_t s = 0; s < sample; ++s) {
    const float* q = table->row(s * n / std::max<size_t>(sample, 1));
    SearchParams sp;
    sp.k = a.k;
    auto t0 = std::chrono::steady_clock::now();
    auto exact = ExactSearch(*table, q, sp);
    auto t1 = std::chrono::steady_clock::now();
    IndexSearchParams ip;
    ip.k = a.k;
    ip.ef = a.ef;
    auto got = (*index)->Search(q, ip);
    auto t2 = std::chrono::steady_clock::now();
    exact_ms += std::chrono::duration<double, std::milli>(t1 - t0).count();
    graph_ms += std::chrono::duration<double, std::milli>(t2 - t1).count();
    // A returned row counts when exact search returned it too, or when it ties with the k-th
    // exact neighbour: its float32 distance is within 0.1% of the k-th's (ann-benchmarks'
    // convention; the graph's half-precision copies may order near-ties differently).
    std::set<int64_t> want;
    for (auto& nb : exact) want.insert(table->ids[nb.row]);
    const float kth = exact.empty() ? 0.0f : exact.back().distance;
    for (auto& nb : got) {
      if (want.count(nb.id)) {
        ++found;
        continue;
      }
      auto pos = std::lower_bound(table->ids.begin(), table->ids.end(), nb.id);
      if (pos == table->ids.end() || *pos != nb.id) continue;
      const float* row = table->row(static_cast<size_t>(pos - table->ids.begin()));
      const float d = 1.0f - InnerProduct(q, row, static_cast<size_t>(table->dims));
      if (d <= kth * 1.001f + 1e-6f) ++found;
    }
    total += exact.size();
  }
  const double recall = total ? static_cast<double>(found) / static_cast<double>(total) : 1.0;
  const int ef = std::max(a.k, a.ef > 0 ? a.ef : IndexSearchParams::kDefaultEf);
  if (g.json) {
    PrintJson({{"store", MaskedLocation(a.store)},
               {"rows", (*index)->size()},
               {"added_since_save", cu.added},
               {"removed_since_save", cu.removed},
               {"sample", sample},
               {"k", a.k},
               {"ef", ef},
               {"recall", recall},
               {"index_ms_per_query", sample ? graph_ms / sample : 0},
               {"exact_ms_per_query", sample ? exact_ms / sample : 0}});
  } else {
    std::printf(
        "index of %s: %zu rows (%zu added, %zu removed since it was saved)\n"
        "recall@%d = %.4f on %zu sample queries at ef=%d; %.3f ms/query (exact scan %.3f ms)\n",
        a.store.c_str(), (*index)->size(), cu.added, cu.removed, a.k, recall, sample, ef,
        sample ? graph_ms / sample : 0, sample ? exact_ms / sample : 0);
  }
  return 0;
}

int RunDelete(const std::string& location, const std::string& where, const Global& g) {
  auto store = OpenForWriting(location, Store::Mode::kReadWrite);
  if (!store.ok()) return Fail(store.status());
  auto ids = (*store)->Delete(where);
  if (!ids.ok()) return Fail(ids.status());
  // The rows are gone once Delete returns; the index follows (and catches up on its next
  // open should this step be interrupted).
  auto summary = UpdateStoreIndex(**store, false, IndexBuildParams());
  if (!summary.ok()) return Fail(summary.status().WithContext("rows deleted, index not updated"));
  if (g.json) {
    PrintJson({{"store", MaskedLocation(location)},
               {"deleted", ids->size()},
               {"ids", *ids},
               {"index", *summary}});
  } else {
    std::printf("deleted %zu rows from %s\n", ids->size(), location.c_str());
    if (!summary->empty()) std::printf("%s\n", summary->c_str());
  }
  return 0;
}

// ---------------------------------------------------------------- eval
struct EvalArgs {
  std::string store, label, within, group_by, vote = "majority", where, report, open_set;
  int k = 1;
  int show = -1;
  double reject_quantile = 0.97;
  std::string patch_normal;
  PatchEvalOptions patch;
};

// eval --patch-normal: the patch-aware prediction of every row of `table`.
Result<EvalReport> PatchEval(const EvalArgs& a, const VectorTable& table, const EvalOptions& opt,
                             const CollectionInfo& info, const Global& g) {
  std::string sha;
  NL_ASSIGN_OR_RETURN(auto embedder, OpenPatchEmbedder(a.store, info, g, false, &sha));
  PatchEvalOptions po = a.patch;
  po.label_field = opt.label_field;
  po.group_field = opt.group_field;
  po.normal_label = a.patch_normal;
  const ModelCard& card = embedder->card();
  const PatchProjector projector = PatchProjector::Create(card.dims, card.patch_grid, po.features);
  PatchEvalInput in;
  in.dims = projector.dims();
  for (const auto& m : table.metadata) {
    json meta = ParseMeta(m);
    in.labels.push_back(MetadataField(meta, opt.label_field));
    in.groups.push_back(opt.group_field.empty() ? "" : MetadataField(meta, opt.group_field));
  }
  // In chunks: raw maps are large (28 x 28 x 192 floats an image), projected ones small.
  ProgressBar bar("patches");
  constexpr size_t kChunk = 64;
  for (size_t at = 0; at < table.size(); at += kChunk) {
    std::vector<std::string> paths(
        table.sources.begin() + static_cast<ptrdiff_t>(at),
        table.sources.begin() + static_cast<ptrdiff_t>(std::min(table.size(), at + kChunk)));
    for (PatchMap& p : ReadPatchMaps(paths, *embedder)) {
      if (!p.status.ok()) {
        std::fprintf(stderr, "nearlabel: warning: %s: %s (not evaluated)\n",
                     TerminalSafe(p.path).c_str(), TerminalSafe(p.status.message()).c_str());
        in.patches.emplace_back();
        continue;
      }
      in.patches.push_back(PoolPatches(projector, p.raw.data(), po.pool, &in.patches_per_row));
    }
    bar.Update(std::min(table.size(), at + kChunk), table.size());
  }
  bar.Finish();
  NL_ASSIGN_OR_RETURN(PatchEvalResult r, PatchLeaveOneGroupOut(in, po));
  std::vector<Neighbor> evidence;
  for (size_t i = 0; i < table.size(); ++i) {
    evidence.push_back({r.evidence_row[i], r.evidence_distance[i]});
  }
  return ReportFromPredictions(opt, in.labels, r.predicted, evidence);
}

// eval --open-set: hold each chosen class out in turn and report rejection rates.
int RunOpenSetEval(const EvalArgs& a, const VectorTable& table, const std::string& label_field,
                   const Global& g) {
  std::vector<std::string> classes;
  if (a.open_set == "all") {
    std::set<std::string> seen;
    for (const auto& m : table.metadata) {
      std::string l = MetadataField(ParseMeta(m), label_field);
      if (!l.empty()) seen.insert(l);
    }
    classes.assign(seen.begin(), seen.end());
  } else {
    classes.push_back(a.open_set);
  }
  json out = json::array();
  std::vector<std::vector<std::string>> rows;
  for (const auto& c : classes) {
    auto rep = EvaluateOpenSet(table, label_field, c, a.reject_quantile);
    if (!rep.ok()) return Fail(rep.status());
    auto pct = [](size_t x, size_t n) { return n ? 100.0 * x / n : 0.0; };
    out.push_back({{"unknown_class", c},
                   {"quantile", a.reject_quantile},
                   {"reference_rows", rep->reference_rows},
                   {"unknown_rows", rep->unknown_rows},
                   {"unknown_rejected", rep->unknown_rejected},
                   {"known_rows", rep->known_rows},
                   {"known_rejected", rep->known_rejected},
                   {"known_correct", rep->known_correct}});
    rows.push_back({c, std::to_string(rep->unknown_rows),
                    FormatDouble(pct(rep->unknown_rejected, rep->unknown_rows), 1) + "%",
                    std::to_string(rep->known_rows),
                    FormatDouble(pct(rep->known_rejected, rep->known_rows), 1) + "%",
                    FormatDouble(pct(rep->known_correct, rep->known_rows), 1) + "%"});
  }
  if (g.json) {
    PrintJson(out);
    return 0;
  }
  std::printf(
      "open set, label '%s': each class below held out entirely in turn; the other classes' "
      "rows split in half at random, one half calibrates per-class thresholds (the %.0fth "
      "percentile of leave-one-out nearest distances of correct matches) and answers, the other "
      "half and the held-out class are queries (1-NN, cosine)\n",
      label_field.c_str(), 100 * a.reject_quantile);
  PrintTable({"held-out class", "its rows", "caught as unknown", "known rows", "wrongly rejected",
              "accepted and right"},
             rows);
  return 0;
}

// Writes `text` to `path` through a temporary file and a rename: a reader (or a browser
// reloading it) never sees half a report.
Status WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return Status::IOError("cannot write " + tmp + ": " + std::strerror(errno));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) {
    std::remove(tmp.c_str());
    return Status::IOError("writing " + tmp + " failed (disk full?)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return Status::IOError("cannot rename " + tmp + " to " + path + ": " + std::strerror(errno));
  }
  return Status::OK();
}

int RunEval(const EvalArgs& a, const Global& g) {
  auto opened = OpenIngested(a.store, a.vote);
  if (!opened.ok()) return Fail(opened.status());
  auto& store = opened->store;
  const CollectionInfo& info = opened->info;
  const Vote vote = opened->vote;
  auto table = store->LoadVectors(a.where);
  if (!table.ok()) return Fail(table.status());
  WarnDamaged(*table, *store);
  EvalOptions opt;
  opt.label_field = !a.label.empty() ? a.label : info.label_field;
  if (!a.open_set.empty()) return RunOpenSetEval(a, *table, opt.label_field, g);
  opt.within_field = a.within;
  opt.group_field = a.group_by;
  opt.k = a.k;
  opt.vote = vote;
  ProgressBar bar("eval");
  bar.Update(0, table->size());
  auto rep = LeaveOneOut(*table, opt);
  bar.Finish();
  if (!rep.ok()) return Fail(rep.status());
  std::string protocol =
      a.group_by.empty() ? "leave-one-out" : "leave-one-group-out by " + a.group_by;
  std::optional<EvalReport> global;
  if (!a.patch_normal.empty()) {
    // Patch-aware: the global 1-NN figure of the same rows stays for comparison.
    auto patch = PatchEval(a, *table, opt, info, g);
    if (!patch.ok()) return Fail(patch.status());
    global = std::move(*rep);
    *rep = std::move(*patch);
    protocol += ", patch-aware (" + std::to_string(a.patch.votes) +
                " most anomalous patches vote; normal class '" + a.patch_normal + "')";
  }
  std::string rule = a.within.empty() ? "" : ", neighbours within the same " + a.within;
  if (!a.report.empty()) {
    // The report compares against plain leave-one-out when the evaluation is group-aware.
    Result<EvalReport> plain = Status::NotFound("");
    if (!a.group_by.empty()) {
      EvalOptions plain_opt = opt;
      plain_opt.group_field.clear();
      plain = LeaveOneOut(*table, plain_opt);
      if (!plain.ok()) return Fail(plain.status());
    }
    EvalReportPage page;
    page.store = a.store;
    page.model = info.model;
    page.protocol = protocol + ", " + std::to_string(a.k) + "-NN, cosine distance" + rule;
    page.report = &*rep;
    page.plain = plain.ok() ? &*plain : nullptr;
    page.table = &*table;
    page.thumbnail = [&](int64_t id) {
      auto jpeg = store->GetThumbnail(id);
      if (!jpeg.ok()) {  // stored before thumbnails were kept: from the file, if it is there
        auto it = std::lower_bound(table->ids.begin(), table->ids.end(), id);
        if (it != table->ids.end() && *it == id) {
          jpeg = ThumbnailOfFile(table->sources[static_cast<size_t>(it - table->ids.begin())]);
        }
      }
      return jpeg.ok() ? *jpeg : std::string();
    };
    Status st = WriteFileAtomically(a.report, RenderEvalReport(page));
    if (!st.ok()) return Fail(st);
    std::fprintf(stderr, "nearlabel: report written to %s\n", a.report.c_str());
  }
  auto mismatch_json = [&](const EvalCase& c) {
    const Neighbor& nb = c.neighbors.front();
    return json{
        {"id", table->ids[c.row]},
        {"source", table->sources[c.row]},
        {"truth", c.truth},
        {"predicted", c.predicted},
        {"nearest_id", table->ids[nb.row]},
        {"nearest_source", table->sources[nb.row]},
        {"nearest_label", MetadataField(ParseMeta(table->metadata[nb.row]), opt.label_field)},
        {"distance", nb.distance}};
  };
  if (g.json) {
    json j = {{"protocol", protocol},
              {"label", opt.label_field},
              {"within", a.within},
              {"group_by", a.group_by},
              {"k", a.k},
              {"vote", VoteName(vote)},
              {"rows", rep->rows},
              {"n", rep->n},
              {"correct", rep->correct},
              {"accuracy", rep->accuracy},
              {"skipped_no_label", rep->no_label},
              {"skipped_no_candidate", rep->no_candidate},
              {"global_accuracy", global ? json(global->accuracy) : json(nullptr)},
              {"classes", rep->classes},
              {"confusion", rep->confusion},
              {"per_class", json::array()},
              {"mismatches", json::array()}};
    for (const auto& s : rep->per_class) {
      j["per_class"].push_back({{"label", s.label},
                                {"support", s.support},
                                {"precision", s.precision},
                                {"recall", s.recall},
                                {"f1", s.f1}});
    }
    for (const auto& c : rep->mismatches) j["mismatches"].push_back(mismatch_json(c));
    PrintJson(j);
    return 0;
  }
  std::printf("%s, %d-NN (%s vote), cosine distance, label '%s'%s\n", protocol.c_str(), a.k,
              VoteName(vote), TerminalSafe(opt.label_field).c_str(), TerminalSafe(rule).c_str());
  std::printf("N = %zu, correct = %zu, accuracy = %.2f%%  (%zu of %zu correct)\n", rep->n,
              rep->correct, 100 * rep->accuracy, rep->correct, rep->n);
  if (global) {
    std::printf(
        "global %d-NN on the same rows and protocol: accuracy = %.2f%% (%zu of %zu); "
        "patch-aware is %+.2f points\n",
        a.k, 100 * global->accuracy, global->correct, global->n,
        100 * (rep->accuracy - global->accuracy));
  }
  if (rep->no_label || rep->no_candidate) {
    std::printf("not evaluated: %zu rows without '%s', %zu rows with no allowed neighbour\n",
                rep->no_label, opt.label_field.c_str(), rep->no_candidate);
  }
  std::printf("\nper class:\n");
  std::vector<std::vector<std::string>> rows;
  for (const auto& s : rep->per_class) {
    rows.push_back({s.label, std::to_string(s.support), FormatDouble(s.precision, 4),
                    FormatDouble(s.recall, 4), FormatDouble(s.f1, 4)});
  }
  PrintTable({"class", "support", "precision", "recall", "f1"}, rows);
  std::printf("\nconfusion matrix (rows: truth, columns: predicted):\n");
  std::vector<std::string> header{"truth \\ predicted"};
  header.insert(header.end(), rep->classes.begin(), rep->classes.end());
  rows.clear();
  for (size_t i = 0; i < rep->classes.size(); ++i) {
    std::vector<std::string> r{rep->classes[i]};
    for (size_t v : rep->confusion[i]) r.push_back(std::to_string(v));
    rows.push_back(r);
  }
  PrintTable(header, rows);
  size_t show = a.show < 0 ? rep->mismatches.size() : static_cast<size_t>(a.show);
  std::printf("\nmismatches (%zu)%s:\n", rep->mismatches.size(),
              show < rep->mismatches.size() ? (", first " + std::to_string(show)).c_str() : "");
  rows.clear();
  for (size_t i = 0; i < rep->mismatches.size() && i < show; ++i) {
    json m = mismatch_json(rep->mismatches[i]);
    rows.push_back({std::to_string(m["id"].get<int64_t>()), m["truth"], m["predicted"],
                    std::to_string(m["nearest_id"].get<int64_t>()), m["nearest_label"],
                    FormatDouble(m["distance"].get<double>(), 4), m["source"],
                    m["nearest_source"]});
  }
  if (!rows.empty()) {
    PrintTable({"id", "truth", "predicted", "nearest", "its label", "distance", "source",
                "nearest source"},
               rows);
  }
  return 0;
}

// ---------------------------------------------------------------- anomaly
struct AnomalyArgs {
  std::string store, name = "default", normal, anomalous, heatmap_dir, report;
  std::string bank_search = "auto";
  std::vector<std::string> images;
  AnomalyFitOptions fit;
};

// The store's model as a patch embedder (checked against the store like OpenEmbedderForStore).
Result<std::unique_ptr<Embedder>> OpenPatchEmbedder(const std::string& location,
                                                    const CollectionInfo& info, const Global& g,
                                                    bool few_images, std::string* sha) {
  NL_ASSIGN_OR_RETURN(ModelCard card, FindModel(info.model, ModelSearchDirs(g.model_dirs)));
  NL_ASSIGN_OR_RETURN(*sha, Sha256File(card.onnx_path));
  if (*sha != info.model_sha256) {
    return Status::Mismatch("store " + location + " was built with a different ONNX file of " +
                            info.model + " than " + card.onnx_path);
  }
  NL_ASSIGN_OR_RETURN(ModelCard patch_card, PatchFeatureCard(card));
  return MakeEmbedder(patch_card, g, few_images);
}

Result<AnomalyModel> LoadAnomalyModel(Store& store, const std::string& name,
                                      const CollectionInfo& info) {
  auto bytes = store.GetBlob(AnomalyModelKey(name));
  if (!bytes.ok() && bytes.status().code() == Status::Code::kNotFound) {
    return Status::NotFound("store " + store.location() + " has no anomaly model '" + name +
                            "' (fit one with `nearlabel anomaly fit " + store.location() +
                            " --normal CONDITION`)");
  }
  if (!bytes.ok()) return bytes.status();
  auto m = AnomalyModel::Parse(*bytes);
  if (!m.ok()) return m.status().WithContext("anomaly model '" + name + "'");
  if (m->model != info.model || m->model_sha256 != info.model_sha256) {
    return Status::Mismatch("anomaly model '" + name + "' was fitted with model " + m->model +
                            ", the store now holds " + info.model + ": fit it again");
  }
  return m;
}

std::string BankSearchName(const AnomalyModel& m) {
  return m.bank_index ? "hnsw graph (ef " + std::to_string(m.bank_index_ef) + ")" : "exact scan";
}

int RunAnomalyFit(const AnomalyArgs& a, const Global& g) {
  auto opened = OpenIngested(a.store, "majority", Store::Mode::kReadWrite);
  if (!opened.ok()) return Fail(opened.status());
  Store& store = *opened->store;
  std::string sha;
  auto embedder = OpenPatchEmbedder(a.store, opened->info, g, false, &sha);
  if (!embedder.ok()) return Fail(embedder.status());
  AnomalyFitOptions opt = a.fit;
  opt.name = a.name;
  opt.bank_index = a.bank_search == "hnsw"    ? AnomalyFitOptions::BankIndex::kHnsw
                   : a.bank_search == "exact" ? AnomalyFitOptions::BankIndex::kExact
                                              : AnomalyFitOptions::BankIndex::kAuto;
  opt.normal_where = a.normal;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> warnings;
  auto model = FitAnomalyModel(store, **embedder, sha, opt, &warnings);
  if (!model.ok()) return Fail(model.status());
  for (const auto& w : warnings)
    std::fprintf(stderr, "nearlabel: warning: skipped %s\n", TerminalSafe(w).c_str());
  auto serialized = model->Serialize();
  if (!serialized.ok()) return Fail(serialized.status());
  const std::string& bytes = *serialized;
  Status st = store.PutBlob(AnomalyModelKey(a.name), bytes);
  if (!st.ok()) return Fail(st);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto& m = *model;
  if (g.json) {
    PrintJson({{"name", m.name},
               {"normal", m.normal_where},
               {"bank_images", m.bank_items.size()},
               {"calibration_images", m.calibration_items.size()},
               {"test_images", m.test_items.size()},
               {"patches", m.patches_before_coreset},
               {"bank_patches", m.bank_rows()},
               {"patch_dims", m.projector.dims()},
               {"bank_bytes", bytes.size()},
               {"bank_search", BankSearchName(m)},
               {"threshold", m.threshold},
               {"false_alarm_rate", m.false_alarm_rate},
               {"skipped", warnings.size()},
               {"seconds", secs}});
    return 0;
  }
  std::printf(
      "anomaly model '%s' fitted on %zu normal images (%s) in %.1f s\n"
      "  bank        %zu of %zu patches (greedy coreset), %d-d from a %dx%d map of %d-d, %.1f MB\n"
      "  search      %s\n"
      "  threshold   %.4f: %.1f%% of %zu held-out normal images score above it\n"
      "  kept out    %zu more normal images for `nearlabel anomaly eval`\n",
      m.name.c_str(), m.bank_items.size(), m.normal_where.c_str(), secs, m.bank_rows(),
      m.patches_before_coreset, m.projector.dims(), m.projector.grid(), m.projector.grid(),
      m.projector.raw_dims(), bytes.size() / 1e6, BankSearchName(m).c_str(), m.threshold,
      100 * m.false_alarm_rate, m.calibration_items.size(), m.test_items.size());
  if (!warnings.empty()) {
    std::printf("  skipped     %zu unreadable images (listed above)\n", warnings.size());
  }
  return 0;
}

// A row scored by an anomaly model.
struct ScoredRow {
  int64_t id = 0;
  std::string source;
  AnomalyScore score;
};

// Scores the rows matching `where` (their image files) with `model`, reading the patch maps a
// few dozen at a time (one map is grid x grid x raw dims floats: 0.6 MB for the default
// model). Keeps the patch scores only with `keep_patches` (for heat maps).
Result<std::vector<ScoredRow>> ScoreRows(Store& store, const AnomalyModel& model,
                                         Embedder& embedder, const std::string& where,
                                         bool keep_patches, size_t* unreadable) {
  NL_ASSIGN_OR_RETURN(VectorTable rows, store.LoadVectors(where));
  std::vector<ScoredRow> out;
  constexpr size_t kChunk = 64;
  for (size_t at = 0; at < rows.size(); at += kChunk) {
    const size_t end = std::min(rows.size(), at + kChunk);
    const std::vector<std::string> paths(rows.sources.begin() + static_cast<ptrdiff_t>(at),
                                         rows.sources.begin() + static_cast<ptrdiff_t>(end));
    const std::vector<PatchMap> maps = ReadPatchMaps(paths, embedder);
    for (size_t i = 0; i < maps.size(); ++i) {
      if (!maps[i].status.ok()) {
        ++*unreadable;
        continue;
      }
      ScoredRow r{rows.ids[at + i], maps[i].path, ScoreImage(model, maps[i].raw.data())};
      if (!keep_patches) r.score.patch_scores.clear();
      out.push_back(std::move(r));
    }
  }
  return out;
}

std::vector<float> ScoresOf(const std::vector<ScoredRow>& rows) {
  std::vector<float> v;
  for (const ScoredRow& r : rows) v.push_back(r.score.score);
  return v;
}

std::string IdList(const std::vector<int64_t>& ids) {
  std::string s;
  for (int64_t id : ids) s += (s.empty() ? "" : ",") + std::to_string(id);
  return "id IN (" + s + ")";
}

// The heat maps of up to `cap` of `rows` for the report, in the order given.
std::vector<AnomalyReportImage> ReportImages(const std::vector<const ScoredRow*>& rows, size_t cap,
                                             const AnomalyModel& model,
                                             const PreprocessSpec& spec) {
  std::vector<AnomalyReportImage> out;
  for (size_t i = 0; i < rows.size() && i < cap; ++i) {
    const ScoredRow& r = *rows[i];
    AnomalyReportImage im{r.id, r.source, r.score.score, ""};
    auto bytes = ReadFileToString(r.source);
    auto img = bytes.ok() ? DecodeImage(*bytes) : Result<cv::Mat>(bytes.status());
    if (img.ok()) {
      std::vector<uchar> jpeg;
      cv::imencode(".jpg", AnomalyHeatmap(*img, spec, model, r.score.patch_scores), jpeg,
                   {cv::IMWRITE_JPEG_QUALITY, 85});
      im.heatmap_jpeg.assign(jpeg.begin(), jpeg.end());
    }
    out.push_back(std::move(im));
  }
  return out;
}

int RunAnomalyEval(const AnomalyArgs& a, const Global& g) {
  auto opened = OpenIngested(a.store, "majority");
  if (!opened.ok()) return Fail(opened.status());
  auto& store = *opened->store;
  auto model = LoadAnomalyModel(store, a.name, opened->info);
  if (!model.ok()) return Fail(model.status());
  std::string sha;
  auto embedder = OpenPatchEmbedder(a.store, opened->info, g, false, &sha);
  if (!embedder.ok()) return Fail(embedder.status());
  if (model->test_items.empty()) {
    return Fail(Status::InvalidArgument("anomaly model '" + a.name + "' kept no test images"));
  }
  const std::string anomalous =
      a.anomalous.empty() ? "NOT (" + model->normal_where + ")" : a.anomalous;
  const bool report = !a.report.empty();
  size_t unreadable = 0;
  auto normal_rows =
      ScoreRows(store, *model, **embedder, IdList(model->test_items), report, &unreadable);
  if (!normal_rows.ok()) return Fail(normal_rows.status());
  auto bad_rows = ScoreRows(store, *model, **embedder, anomalous, report, &unreadable);
  if (!bad_rows.ok()) return Fail(bad_rows.status());
  if (bad_rows->empty()) {
    return Fail(Status::InvalidArgument("no readable anomalous rows match: " + anomalous));
  }
  const std::vector<float> normal = ScoresOf(*normal_rows), bad = ScoresOf(*bad_rows);
  const double auroc = Auroc(normal, bad);
  // Thresholds: the calibrated one, then those that give 1%, 5%, 10% false alarms on the
  // calibration images, then those that catch 90%, 95%, 99% of the anomalies.
  std::vector<std::pair<std::string, float>> thresholds{{"calibrated", model->threshold}};
  for (double r : {0.01, 0.05, 0.10}) {
    thresholds.push_back({"cal. " + FormatDouble(100 * r, 0) + "% false alarms",
                          ThresholdForFalseAlarms(model->calibration_scores, r)});
  }
  for (double r : {0.90, 0.95, 0.99}) {
    thresholds.push_back(
        {"catch " + FormatDouble(100 * r, 0) + "% (hindsight)", ThresholdForFalseAlarms(bad, r)});
  }
  auto rate_above = [](const std::vector<float>& v, float t) {
    return v.empty() ? 0.0
                     : static_cast<double>(
                           std::count_if(v.begin(), v.end(), [&](float s) { return s > t; })) /
                           static_cast<double>(v.size());
  };
  if (report) {
    AnomalyReportPage page;
    page.store = MaskedLocation(a.store);
    page.name = a.name;
    page.model = model->model;
    page.normal = model->normal_where;
    page.anomalous = anomalous;
    page.auroc = auroc;
    page.threshold = model->threshold;
    page.false_alarm_rate = model->false_alarm_rate;
    page.normal_scores = normal;
    page.anomalous_scores = bad;
    for (const auto& [what, t] : thresholds) {
      page.thresholds.push_back({what, t, rate_above(normal, t), 1 - rate_above(bad, t)});
    }
    // Misses lowest score first (the least visible), alarms and catches highest first.
    std::vector<const ScoredRow*> missed, alarms, caught;
    for (const ScoredRow& r : *bad_rows) {
      (r.score.score > model->threshold ? caught : missed).push_back(&r);
    }
    for (const ScoredRow& r : *normal_rows) {
      if (r.score.score > model->threshold) alarms.push_back(&r);
    }
    auto by_score = [](bool ascending) {
      return [ascending](const ScoredRow* x, const ScoredRow* y) {
        return ascending ? x->score.score < y->score.score : x->score.score > y->score.score;
      };
    };
    std::sort(missed.begin(), missed.end(), by_score(true));
    std::sort(alarms.begin(), alarms.end(), by_score(false));
    std::sort(caught.begin(), caught.end(), by_score(false));
    const PreprocessSpec& spec = (*embedder)->card().preprocess;
    page.missed = ReportImages(missed, 24, *model, spec);
    page.false_alarms = ReportImages(alarms, 24, *model, spec);
    page.caught = ReportImages(caught, 12, *model, spec);
    page.missed_total = missed.size();
    page.false_alarms_total = alarms.size();
    page.caught_total = caught.size();
    Status st = WriteFileAtomically(a.report, RenderAnomalyReport(page));
    if (!st.ok()) return Fail(st);
  }
  if (g.json) {
    json j = {{"name", a.name},
              {"normal", model->normal_where},
              {"anomalous", anomalous},
              {"normal_images", normal.size()},
              {"anomalous_images", bad.size()},
              {"unreadable", unreadable},
              {"auroc", auroc},
              {"thresholds", json::array()}};
    for (const auto& [what, t] : thresholds) {
      j["thresholds"].push_back({{"what", what},
                                 {"threshold", t},
                                 {"false_alarm_rate", rate_above(normal, t)},
                                 {"miss_rate", 1 - rate_above(bad, t)}});
    }
    if (report) j["report"] = a.report;
    PrintJson(j);
    return 0;
  }
  std::printf(
      "anomaly model '%s': %zu held-out normal images (never in the bank) vs %zu "
      "anomalous (%s)\n",
      a.name.c_str(), normal.size(), bad.size(), anomalous.c_str());
  std::printf("image AUROC = %.4f\n\n", auroc);
  std::vector<std::vector<std::string>> rows;
  for (const auto& [what, t] : thresholds) {
    rows.push_back({what, FormatDouble(t, 4), FormatDouble(100 * rate_above(normal, t), 1) + "%",
                    FormatDouble(100 * (1 - rate_above(bad, t)), 1) + "%"});
  }
  PrintTable({"threshold", "score", "false alarms", "misses"}, rows);
  if (unreadable) std::printf("\n%zu rows skipped: image file unreadable\n", unreadable);
  if (report) std::printf("\nreport: %s\n", a.report.c_str());
  return 0;
}

int RunAnomalyScore(const AnomalyArgs& a, const Global& g) {
  auto opened = OpenIngested(a.store, "majority");
  if (!opened.ok()) return Fail(opened.status());
  auto model = LoadAnomalyModel(*opened->store, a.name, opened->info);
  if (!model.ok()) return Fail(model.status());
  std::string sha;
  auto embedder = OpenPatchEmbedder(a.store, opened->info, g, a.images.size() < 8, &sha);
  if (!embedder.ok()) return Fail(embedder.status());
  if (!a.heatmap_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(a.heatmap_dir, ec);
    if (ec) return Fail(Status::IOError("cannot create " + a.heatmap_dir + ": " + ec.message()));
  }
  int failures = 0;
  json out = json::array();
  std::vector<std::vector<std::string>> rows;
  const PreprocessSpec& spec = (*embedder)->card().preprocess;
  std::vector<PatchMap> maps = ReadPatchMaps(a.images, **embedder);
  for (size_t i = 0; i < maps.size(); ++i) {
    const PatchMap& p = maps[i];
    if (!p.status.ok()) {
      std::fprintf(stderr, "nearlabel: error: %s: %s\n", TerminalSafe(p.path).c_str(),
                   TerminalSafe(p.status.message()).c_str());
      ++failures;
      continue;
    }
    const AnomalyScore s = ScoreImage(*model, p.raw.data());
    const bool anomalous = s.score > model->threshold;
    json r = {{"image", p.path},
              {"score", s.score},
              {"threshold", model->threshold},
              {"verdict", anomalous ? "anomalous" : "normal"},
              {"grid", model->projector.grid()},
              {"patch_scores", s.patch_scores}};
    std::string heatmap = "-";
    if (!a.heatmap_dir.empty()) {
      auto bytes = ReadFileToString(p.path);
      auto img = bytes.ok() ? DecodeImage(*bytes) : Result<cv::Mat>(bytes.status());
      if (!img.ok()) return Fail(img.status());
      const cv::Mat overlay = AnomalyHeatmap(*img, spec, *model, s.patch_scores);
      heatmap = (std::filesystem::path(a.heatmap_dir) /
                 (std::to_string(i + 1) + "-" + std::filesystem::path(p.path).stem().string() +
                  ".heatmap.png"))
                    .string();
      std::vector<uchar> png;
      cv::imencode(".png", overlay, png);
      Status st = WriteFileAtomically(heatmap, std::string(png.begin(), png.end()));
      if (!st.ok()) return Fail(st);
      r["heatmap"] = heatmap;
    }
    out.push_back(r);
    rows.push_back({p.path, FormatDouble(s.score, 4), anomalous ? "ANOMALOUS" : "normal", heatmap});
  }
  if (g.json) {
    PrintJson(out);
  } else {
    std::printf(
        "anomaly model '%s', threshold %.4f (%.1f%% false alarms on held-out normal "
        "images)\n",
        a.name.c_str(), model->threshold, 100 * model->false_alarm_rate);
    PrintTable({"image", "score", "verdict", "heat map"}, rows);
  }
  return failures ? 1 : 0;
}

// ---------------------------------------------------------------- sql
json CellJson(const SqlValue& v) {
  if (std::holds_alternative<std::monostate>(v)) return nullptr;
  if (auto* i = std::get_if<int64_t>(&v)) return *i;
  if (auto* d = std::get_if<double>(&v)) return *d;
  if (auto* s = std::get_if<std::string>(&v)) return *s;
  const auto& b = std::get<std::vector<uint8_t>>(v);
  if (b.size() % 4 == 0 && !b.empty()) {  // present float32 blobs as vectors
    return json::parse(FormatVector(reinterpret_cast<const float*>(b.data()), b.size() / 4),
                       nullptr, false);
  }
  return "<blob " + std::to_string(b.size()) + " bytes>";
}

int RunSql(const std::string& store_path, std::string query, bool write, const Global& g) {
  if (query.empty()) {
    query.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  auto store = OpenStore(store_path, write ? Store::Mode::kReadWrite : Store::Mode::kReadOnly);
  if (!store.ok()) return Fail(store.status());
  auto results = (*store)->Execute(query);
  if (!results.ok()) return Fail(results.status().WithContext("SQL"));
  json all = json::array();
  for (const auto& r : *results) {
    if (g.json) {
      json rows = json::array();
      for (const auto& row : r.rows) {
        json o = json::object();
        for (size_t c = 0; c < row.size(); ++c) o[r.columns[c]] = CellJson(row[c]);
        rows.push_back(o);
      }
      all.push_back(r.columns.empty() ? json{{"changes", r.changes}} : rows);
      continue;
    }
    if (r.columns.empty()) {
      if (r.changes) std::printf("%lld rows changed\n", static_cast<long long>(r.changes));
      continue;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& row : r.rows) {
      std::vector<std::string> cells;
      for (const auto& v : row) cells.push_back(SqlValueText(v));
      rows.push_back(cells);
    }
    PrintTable(r.columns, rows);
  }
  if (g.json) PrintJson(all.size() == 1 ? all[0] : all);
  return 0;
}

// ---------------------------------------------------------------- check
int RunCheck(const std::string& path, const Global& g) {
  auto store = OpenStore(path, Store::Mode::kReadOnly);
  if (!store.ok()) return Fail(store.status());
  auto report = CheckStore(**store);
  if (!report.ok()) return Fail(report.status());
  if (g.json) {
    json items = json::array();
    for (const CheckItem& c : report->items) {
      items.push_back({{"check", c.what}, {"ok", c.ok}, {"detail", c.detail}, {"fix", c.fix}});
    }
    PrintJson({{"store", MaskedLocation(path)}, {"ok", report->ok()}, {"checks", items}});
  } else {
    for (const CheckItem& c : report->items) {
      std::printf("%-4s %-15s %s\n", c.ok ? "ok" : "BAD", c.what.c_str(),
                  TerminalSafe(c.detail).c_str());
      if (!c.ok) std::printf("     %-15s what to do: %s\n", "", TerminalSafe(c.fix).c_str());
    }
    std::printf("%s: %s\n", MaskedLocation(path).c_str(),
                report->ok() ? "every check passed" : "problems found (see above)");
  }
  return report->ok() ? 0 : 1;
}

// ---------------------------------------------------------------- info / models
int RunInfo(const std::string& path, const Global& g) {
  auto store = OpenStore(path, Store::Mode::kReadOnly);
  if (!store.ok()) return Fail(store.status());
  auto info = (*store)->GetCollection();
  if (!info.ok()) return Fail(info.status());
  auto count = (*store)->Count();
  if (!count.ok()) return Fail(count.status());
  json j = {{"store", MaskedLocation(path)}, {"rows", *count}};
  std::map<std::string, int64_t> label_counts;
  if (*info) {
    j["model"] = (*info)->model;
    j["model_sha256"] = (*info)->model_sha256;
    j["dims"] = (*info)->dims;
    j["metric"] = (*info)->metric;
    j["label_field"] = (*info)->label_field;
    auto res =
        (*store)->Execute("SELECT field(metadata, " + SqlStringLiteral((*info)->label_field) +
                          "), count(*) FROM items GROUP BY 1 ORDER BY 1");
    if (res.ok() && !res->empty()) {
      for (const auto& row : res->back().rows) {
        label_counts[SqlValueText(row[0])] = std::get<int64_t>(row[1]);
      }
    }
    j["labels"] = label_counts;
  }
  auto state = ReadIndexState(**store);
  if (!state.ok()) return Fail(state.status());
  std::string index_line = (*store)->ingest_queue()
                               ? "in memory on each server (`nearlabel serve` builds it; "
                                 "classify and search scan exactly)"
                               : "none (nearlabel index build " + MaskedLocation(path) + ")";
  if (state->exists) {
    j["index"] = {{"file", state->file},
                  {"rows", state->rows},
                  {"last_row_id", state->last_row_id},
                  {"m", state->params.m},
                  {"ef_construction", state->params.ef_construction}};
    index_line = "HNSW m=" + std::to_string(state->params.m) +
                 ", ef-construction=" + std::to_string(state->params.ef_construction) + ", " +
                 std::to_string(state->rows) + " rows when saved, " + state->file;
    // Deleted rows stay in the graph as marked entries until an update rebuilds it (past 20%).
    if (auto mapped = HnswIndex::Map(state->file, (*info)->dims, state->rows,
                                     HnswIndex::Access::kRead);
        mapped.ok()) {
      const size_t nodes = (*mapped)->nodes(), dead = (*mapped)->dead();
      j["index"]["entries"] = nodes;
      j["index"]["dead_entries"] = dead;
      index_line += "; " + std::to_string(dead) + " of " + std::to_string(nodes) +
                    " entries are deleted rows (" +
                    FormatDouble(nodes ? 100.0 * static_cast<double>(dead) / nodes : 0.0, 1) +
                    " %)";
    }
  }
  if (!IsPostgresUri(path)) {
    auto seg = VectorSegment::Map(SegmentPath(path), *info ? (*info)->dims : 0);
    j["segment"] = seg.ok() ? json{{"file", SegmentPath(path)},
                                   {"rows", (*seg)->rows()},
                                   {"change_id", (*seg)->change_id()}}
                            : json(nullptr);
  }
  if (g.json) {
    PrintJson(j);
    return 0;
  }
  std::printf("store        %s\nrows         %lld\nindex        %s\n", path.c_str(),
              static_cast<long long>(*count), index_line.c_str());
  if (*info) {
    std::printf("model        %s (%d-d, %s, sha256 %s)\nlabel field  %s\n", (*info)->model.c_str(),
                (*info)->dims, (*info)->metric.c_str(), (*info)->model_sha256.c_str(),
                (*info)->label_field.c_str());
    for (const auto& [l, n] : label_counts) {
      std::printf("  %-24s %lld\n", l.c_str(), static_cast<long long>(n));
    }
  }
  return 0;
}

int RunModels(const Global& g) {
  auto dirs = ModelSearchDirs(g.model_dirs);
  std::vector<std::string> errors;
  auto models = ListModels(dirs, &errors);
  json j = json::array();
  std::vector<std::vector<std::string>> rows;
  for (const auto& m : models) {
    j.push_back(
        {{"name", m.name},
         {"dims", m.dims},
         {"input", std::to_string(m.preprocess.width) + "x" + std::to_string(m.preprocess.height)},
         {"onnx", m.onnx_path},
         {"available", !m.onnx_path.empty()},
         {"card", m.card_path},
         {"description", m.description}});
    rows.push_back(
        {m.name + (m.name == kDefaultModel ? " (default)" : ""), std::to_string(m.dims),
         m.onnx_path.empty() ? "missing: put " + m.file + " in a models dir" : m.onnx_path});
  }
  if (g.json) {
    PrintJson(j);
  } else {
    std::string where;
    for (const auto& d : dirs) where += " " + d;
    std::printf("models directories:%s\n\n", where.c_str());
    PrintTable({"model", "dims", "onnx file"}, rows);
  }
  for (const auto& e : errors) std::fprintf(stderr, "nearlabel: warning: %s\n", e.c_str());
  return 0;
}

int Main(int argc, char** argv) {
  CLI::App app{
      "nearlabel: classify images by vector search. A pretrained CNN embeds labelled images into\n"
      "a store; a new image takes the label of its nearest labelled neighbours.\n\n"
      "Typical use:\n"
      "  nearlabel ingest shop.db photos/                 # embed a labelled dataset\n"
      "  nearlabel eval shop.db --label quality --within part   # leave-one-out accuracy\n"
      "  nearlabel classify shop.db new.jpg               # label a new image\n"
      "Models are found in NEARLABEL_MODELS (colon-separated directories) or --models.",
      "nearlabel"};
  app.set_version_flag("--version", std::string("nearlabel ") + NEARLABEL_VERSION);
  app.require_subcommand(1);
  app.fallthrough();
  Global g;
  app.add_option("--models", g.model_dirs,
                 "Directory of models (repeatable); default $NEARLABEL_MODELS");
  app.add_flag("--json", g.json, "Print machine-readable JSON instead of text");
  app.add_flag("-v,--verbose", g.verbose, "Print timings");
  app.add_option("--backend", g.backend,
                 "Inference engine: auto (ONNX Runtime if its library loads, else OpenCV DNN), "
                 "onnxruntime or opencv")
      ->capture_default_str();
  app.add_option("--infer-threads", g.infer_threads,
                 "Threads for model inference (0: one per core)")
      ->capture_default_str()
      ->check(CLI::Range(0, 256));
  app.add_option("--infer-sessions", g.infer_sessions,
                 "ONNX Runtime sessions that share a batch, infer-threads / sessions threads "
                 "each (0: nearlabel's default)")
      ->capture_default_str()
      ->check(CLI::Range(0, 256));

  IngestArgs ia;
  auto* ingest = app.add_subcommand(
      "ingest",
      "Embed a labelled dataset into a store (created if missing). Idempotent: images whose "
      "content is stored already are skipped, so re-running after a crash or Ctrl-C resumes.");
  ingest->add_option("store", ia.store, kStoreHelp)->required();
  ingest
      ->add_option(
          "dataset", ia.dataset,
          "Dataset: a folder-per-class tree, an AI Hub tree (라벨링데이터 + 원천데이터), or "
          "a .csv/.tsv/.jsonl manifest")
      ->required();
  ingest->add_option("--model", ia.model,
                     std::string("Model name or .onnx/.card.json path (default: the store's model, "
                                 "else ") +
                         kDefaultModel + ")");
  ingest->add_option("--layout", ia.layout, "auto, aihub, folder or manifest")
      ->capture_default_str();
  ingest->add_option("--batch", ia.batch, "Images per batch and per transaction")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  ingest->add_option("--threads", ia.threads, "Decode threads (0: one per core)")
      ->capture_default_str()
      ->check(CLI::Range(0, 256));
  ingest->add_option("--job", ia.job,
                     "PostgreSQL stores: the name the dataset's images are queued under; workers "
                     "on other machines that give the same name share the work (default: the "
                     "dataset folder's name)");
  ingest
      ->add_option("--lease", ia.lease,
                   "PostgreSQL stores: seconds a claimed batch may take before the database "
                   "aborts it and hands its images to another worker")
      ->capture_default_str()
      ->check(CLI::Range(5, 86400));
  ingest->add_flag("--index", ia.index,
                   "Build an HNSW index after the ingest (a store's existing index is always "
                   "kept up to date)");
  AddGraphOptions(ingest, &ia.index_params, " (with --index)");

  QueryArgs ca;
  auto* classify = app.add_subcommand("classify", "Label new images by their k nearest neighbours");
  classify->add_option("store", ca.store, kStoreHelp)->required();
  classify->add_option("images", ca.images, "Image files")->required();
  classify->add_option("-k,--k", ca.k, "Neighbours that vote (default 5)")
      ->check(CLI::Range(1, 10000));
  classify->add_option("--vote", ca.vote, "majority, distance (1/d) or softmax (exp(sim/0.07))")
      ->capture_default_str();
  classify->add_option("--within", ca.within, "Only neighbours with FIELD=VALUE, e.g. part=exp1");
  classify->add_option(
      "--where", ca.where,
      "SQL condition on items, e.g. \"field(metadata,'part') IN ('exp1','exp2')\"");
  classify->add_option("--label", ca.label, "Field to predict (default: the store's label field)");
  classify->add_option("--model", ca.model, "Model (default: the store's)");
  classify->add_flag("--exact", ca.exact, "Scan every row instead of using the store's index");
  classify->add_flag("--reject", ca.reject,
                     "Open set: answer \"unknown\" when the nearest neighbour is farther than its "
                     "class's threshold (calibrated by leave-one-out over the store's rows)");
  classify
      ->add_option("--reject-quantile", ca.reject_quantile,
                   "Threshold = this quantile of the class's leave-one-out nearest distances of "
                   "correct matches: higher rejects fewer known images and catches fewer unknowns")
      ->capture_default_str()
      ->check(CLI::Range(0.5, 1.0));
  classify
      ->add_option("--ef", ca.ef,
                   "HNSW candidate list (default 128): higher finds more true neighbours, slower")
      ->check(CLI::Range(1, 100000));

  QueryArgs sa;
  auto* search = app.add_subcommand("search", "List the stored images nearest to an image");
  search->add_option("store", sa.store, kStoreHelp)->required();
  search->add_option("images", sa.images, "Image files")->required();
  search->add_option("-k,--k", sa.k, "Neighbours to list (default 10)")
      ->check(CLI::Range(1, 100000));
  search->add_option("--within", sa.within, "Only rows with FIELD=VALUE");
  search->add_option("--where", sa.where, "SQL condition on items");
  search->add_option("--label", sa.label, "Field shown as the label");
  search->add_option("--model", sa.model, "Model (default: the store's)");
  search->add_flag("--exact", sa.exact, "Scan every row instead of using the store's index");
  search
      ->add_option("--ef", sa.ef,
                   "HNSW candidate list (default 128): higher finds more true neighbours, slower")
      ->check(CLI::Range(1, 100000));

  EvalArgs ea;
  auto* eval = app.add_subcommand(
      "eval",
      "Leave-one-out evaluation: label every stored image by its nearest *other* images and "
      "compare. With --group-by, images sharing that field's value never vouch for each other.");
  eval->add_option("store", ea.store, kStoreHelp)->required();
  eval->add_option("--label", ea.label, "Field to predict (default: the store's label field)");
  eval->add_option("--within", ea.within, "Neighbours must share this field's value (e.g. part)");
  eval->add_option("--group-by", ea.group_by,
                   "Leave-one-group-out by this field (e.g. tile_group)");
  eval->add_option("-k,--k", ea.k, "Neighbours that vote")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  eval->add_option("--vote", ea.vote, "majority, distance or softmax")->capture_default_str();
  eval->add_option("--where", ea.where, "SQL condition selecting the rows evaluated");
  eval->add_option("--show", ea.show, "Mismatches to list (default all)");
  eval->add_option("--report", ea.report,
                   "Also write a self-contained HTML report: summary (plain vs group-aware), "
                   "per-class table, confusion matrix, distance histogram, every mistake beside "
                   "its nearest neighbour's thumbnail");
  eval->add_option("--patch-normal", ea.patch_normal,
                   "Patch-aware classification: NORMAL is the defect-free class; each row is "
                   "labelled by its most anomalous patches' nearest labelled patches (needs a "
                   "model card with a patch map). The global k-NN figure is printed beside it");
  eval->add_option("--patch-votes", ea.patch.votes, "Patch-aware: patches that vote per image")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  eval->add_option("--patch-coreset", ea.patch.coreset_fraction,
                   "Patch-aware: fraction of the normal rows' patches kept (greedy k-centre)")
      ->capture_default_str()
      ->check(CLI::Range(0.0001, 1.0));
  eval->add_option("--patch-dims", ea.patch.features.projected_dims,
                   "Patch-aware: random projection of patch vectors to this many dims (0: none)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65536));
  eval->add_option("--patch-pool", ea.patch.pool,
                   "Patch-aware: average the patch grid over POOL x POOL cells (fewer, coarser "
                   "patches)")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  eval->add_option("--open-set", ea.open_set,
                   "Open-set test: hold this class (or each class: all) out entirely and report "
                   "how many of its rows come back \"unknown\" and how many known rows are "
                   "wrongly rejected");
  eval->add_option("--reject-quantile", ea.reject_quantile,
                   "Rejection thresholds: this quantile of each class's leave-one-out nearest "
                   "distances of correct matches")
      ->capture_default_str()
      ->check(CLI::Range(0.5, 1.0));

  std::string sql_store, sql_query;
  bool sql_write = false;
  auto* sql = app.add_subcommand(
      "sql",
      "Run SQL on a store (read-only unless --write). Tables: items(id, source, sha256, metadata, "
      "embedding), collection(key, value); view aihub_labels for AI Hub stores. Functions: "
      "vector_distance(a, b [, 'COSINE'|'EUCLIDEAN'|'EUCLIDEAN_SQUARED'|'DOT'|'MANHATTAN']), "
      "to_vector('[1,2]'), from_vector(blob), vector_dims(v), vector_norm(v), field(metadata, "
      "'name'). On a PostgreSQL store metadata is jsonb (->, ->>, @>) and only field() and "
      "vector_dims() exist: the vector work is nearlabel's (classify, search, eval). Without a "
      "query, statements are read from stdin.");
  sql->add_option("store", sql_store, kStoreHelp)->required();
  sql->add_option("query", sql_query, "SQL statement(s)");
  sql->add_flag("--write", sql_write, "Allow statements that write");

  IndexArgs xa;
  AnomalyArgs aa;
  auto* anomaly = app.add_subcommand(
      "anomaly",
      "Anomaly detection from patch neighbours (PatchCore): fit a bank of normal patches, score "
      "images by their worst patch, evaluate. Needs a model card with a \"patch\" map.");
  anomaly->require_subcommand(1);
  auto* anomaly_fit = anomaly->add_subcommand(
      "fit",
      "Build the bank from normal rows (re-reads their image files) and calibrate the "
      "threshold on held-out normal rows");
  anomaly_fit->add_option("store", aa.store, kStoreHelp)->required();
  anomaly_fit
      ->add_option("--normal", aa.normal,
                   "SQL condition selecting the normal rows, e.g. "
                   "\"field(metadata,'label')='ok_front'\"")
      ->required();
  anomaly_fit->add_option("--name", aa.name, "Name of the anomaly model")->capture_default_str();
  anomaly_fit
      ->add_option("--coreset", aa.fit.coreset_fraction,
                   "Fraction of the bank images' patches kept (greedy k-centre)")
      ->capture_default_str();
  anomaly_fit
      ->add_option("--coreset-max", aa.fit.coreset_max, "At most this many patches (0: no cap)")
      ->capture_default_str();
  anomaly_fit
      ->add_option("--holdout", aa.fit.holdout,
                   "Fraction of normal rows kept out of the bank: half calibrate the "
                   "threshold, half are left for `anomaly eval`")
      ->capture_default_str();
  anomaly_fit
      ->add_option("--false-alarms", aa.fit.false_alarm_rate,
                   "Share of held-out normal images allowed above the threshold")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  anomaly_fit
      ->add_option("--patch-dims", aa.fit.features.projected_dims,
                   "Random projection of patch vectors to this many dims (0: none)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65536));
  anomaly_fit->add_option("--seed", aa.fit.seed, "Seed of the split, projection and coreset")
      ->capture_default_str();
  anomaly_fit
      ->add_option(
          "--bank-search", aa.bank_search,
          "Nearest-patch search: hnsw (a graph stored with the model), exact (a scan), "
          "or auto: hnsw for banks of 30000 patches or more, where the graph measured 3x to "
          "20x faster on an idle machine (bench/patch_bank_search)")
      ->check(CLI::IsMember({"auto", "hnsw", "exact"}))
      ->capture_default_str();
  auto* anomaly_score = anomaly->add_subcommand(
      "score",
      "Score images: the worst patch's distance to the nearest normal patch, and a "
      "verdict against the calibrated threshold");
  anomaly_score->add_option("store", aa.store, kStoreHelp)->required();
  anomaly_score->add_option("images", aa.images, "Image files")->required();
  anomaly_score->add_option("--name", aa.name, "Anomaly model")->capture_default_str();
  anomaly_score->add_option("--heatmap", aa.heatmap_dir,
                            "Write a PNG heat map of patch scores over each image to this folder");
  auto* anomaly_eval = anomaly->add_subcommand(
      "eval",
      "Image AUROC and false-alarm / miss rates per threshold, on the held-out normal "
      "rows and the anomalous rows");
  anomaly_eval->add_option("store", aa.store, kStoreHelp)->required();
  anomaly_eval->add_option("--name", aa.name, "Anomaly model")->capture_default_str();
  anomaly_eval->add_option("--anomalous", aa.anomalous,
                           "SQL condition selecting the anomalous rows (default: NOT the "
                           "model's --normal condition)");
  anomaly_eval->add_option("--report", aa.report,
                           "Also write a self-contained HTML report: AUROC, thresholds, score "
                           "histogram, heat maps of the missed anomalies, the false alarms and "
                           "the clearest catches");

  auto* index = app.add_subcommand(
      "index",
      "Manage a store's HNSW vector index (a file next to the store; classify and search use it "
      "when present, --exact to bypass it)");
  index->require_subcommand(1);
  auto* index_build = index->add_subcommand(
      "build", "Build (or rebuild) the index over every row; later ingests keep it up to date");
  index_build->add_option("store", xa.store, kStoreHelp)->required();
  AddGraphOptions(index_build, &xa.params, "");
  index_build->add_option("--threads", xa.params.threads, "Build threads (0: one per core)")
      ->check(CLI::Range(0, 256));
  auto* index_check = index->add_subcommand(
      "check", "Report the index's recall@k against exact search on a sample of stored rows");
  index_check->add_option("store", xa.store, kStoreHelp)->required();
  index_check->add_option("--sample", xa.sample, "Rows used as queries")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  index_check->add_option("-k,--k", xa.k, "Neighbours compared")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  index_check->add_option("--ef", xa.ef, "HNSW candidate list (default 128)")
      ->check(CLI::Range(1, 100000));

  std::string delete_store, delete_where;
  auto* del = app.add_subcommand("delete",
                                 "Delete rows (and their index entries) matching an SQL condition");
  del->add_option("store", delete_store, kStoreHelp)->required();
  del->add_option("--where", delete_where,
                  "SQL condition on items, e.g. \"field(metadata,'label') = 'scratch'\" or "
                  "\"id IN (4, 7)\"")
      ->required();

  std::string info_store;
  auto* info = app.add_subcommand("info", "Show a store's model, size and label counts");
  info->add_option("store", info_store, kStoreHelp)->required();

  std::string check_store;
  auto* check = app.add_subcommand(
      "check",
      "Verify a whole store: SQLite's integrity check, every embedding (finite, unit length), "
      "every row's metadata, and the index against the table. Changes nothing; exit 1 and "
      "what to do when a check fails");
  check->add_option("store", check_store, kStoreHelp)->required();

  auto* models = app.add_subcommand("models", "List the models nearlabel can find");

  ServeArgs va;
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
      ->each([&va](const std::string&) { va.anomaly_given = true; });
  serve->add_option("--cache", va.opt.cache_dir,
                    "PostgreSQL stores: a directory of this node's own for the vector segment "
                    "and the change id it holds, so a restart catches up instead of reloading "
                    "(default: vectors in memory). SQLite stores keep theirs next to the file");
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
      ->add_option("--max-megapixels", va.max_megapixels,
                   "Largest declared image size, megapixels (413 above, checked before decoding)")
      ->capture_default_str()
      ->check(CLI::Range(0.000001, 1000.0));

  std::string init_store;
  auto* init = app.add_subcommand(
      "init",
      "Create or upgrade the nearlabel schema of a PostgreSQL database (versioned migrations, "
      "each in one transaction; safe to run from many machines at once). `ingest` runs it "
      "too. SQLite stores need no init: `ingest` creates the file.");
  init->add_option("store", init_store, "postgresql://USER@HOST:PORT/DB")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (init->parsed()) return RunInit(init_store, g);
  if (ingest->parsed()) return RunIngest(ia, g);
  if (classify->parsed()) return RunQuery(ca, g, true);
  if (search->parsed()) return RunQuery(sa, g, false);
  if (eval->parsed()) return RunEval(ea, g);
  if (sql->parsed()) return RunSql(sql_store, sql_query, sql_write, g);
  if (info->parsed()) return RunInfo(info_store, g);
  if (check->parsed()) return RunCheck(check_store, g);
  if (index_build->parsed()) return RunIndexBuild(xa, g);
  if (anomaly_fit->parsed()) return RunAnomalyFit(aa, g);
  if (anomaly_score->parsed()) return RunAnomalyScore(aa, g);
  if (anomaly_eval->parsed()) return RunAnomalyEval(aa, g);
  if (index_check->parsed()) return RunIndexCheck(xa, g);
  if (del->parsed()) return RunDelete(delete_store, delete_where, g);
  if (models->parsed()) return RunModels(g);
  if (serve->parsed()) return RunServe(va, g);
  return 2;
}

}  // namespace
}  // namespace nearlabel::cli

int main(int argc, char** argv) {
  try {
    return nearlabel::cli::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nearlabel: internal error: %s\n", e.what());
    return 1;
  }
}
