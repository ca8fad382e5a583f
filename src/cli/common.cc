// Helpers every command uses (declared in cli/cli.h).
#include "cli/cli.h"

namespace nearlabel::cli {

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

// Loads the store's model (or `model_arg` when given) and checks it matches the store.
Result<std::unique_ptr<Embedder>> OpenEmbedderForStore(const std::string& location,
                                                       const CollectionInfo* info,
                                                       const std::string& model_arg,
                                                       const Global& g, bool few_images) {
  NL_ASSIGN_OR_RETURN(ModelCard card,
                      ModelOfStore(*info, location, ModelSearchDirs(g.model_dirs), model_arg));
  return MakeEmbedder(card, g, few_images);
}

Result<Ingested> OpenIngested(const std::string& path, const std::string& vote_name,
                              Store::Mode mode) {
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

}  // namespace nearlabel::cli
