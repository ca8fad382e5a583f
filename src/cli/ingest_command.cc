#include "cli/cli.h"

namespace nearlabel::cli {
namespace {

std::atomic<bool> g_stop{false};  // ingest: SIGINT/SIGTERM ask it to stop after the batch

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
    index_summary = IndexUpdateSummary(*summary);
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

}  // namespace

void AddIngestCommands(CLI::App& app, const Global& g, Runner* run) {
  static IngestArgs ia;
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

  static std::string init_store;
  auto* init = app.add_subcommand(
      "init",
      "Create or upgrade the nearlabel schema of a PostgreSQL database (versioned migrations, "
      "each in one transaction; safe to run from many machines at once). `ingest` runs it "
      "too. SQLite stores need no init: `ingest` creates the file.");
  init->add_option("store", init_store, "postgresql://USER@HOST:PORT/DB")->required();

  ingest->callback([&g, run] { *run = [&g] { return RunIngest(ia, g); }; });
  init->callback([&g, run] { *run = [&g] { return RunInit(init_store, g); }; });
}

}  // namespace nearlabel::cli
