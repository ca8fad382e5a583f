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

// What can fail on the arguments, checked before the store file is created: the layout and
// a listing with at least one image (its problems printed when it has none).
Result<DatasetListing> ListForIngest(const IngestArgs& a) {
  NL_ASSIGN_OR_RETURN(DatasetLayout layout, ParseDatasetLayout(a.layout));
  NL_ASSIGN_OR_RETURN(DatasetListing listing, ListDataset(a.dataset, layout));
  if (listing.items.empty()) {
    for (const auto& p : listing.problems) {
      std::fprintf(stderr, "  %s: %s\n", TerminalSafe(p.path).c_str(),
                   TerminalSafe(p.reason).c_str());
    }
    return Status::NotFound("no images found in " + a.dataset + " (layout " +
                            DatasetLayoutName(listing.layout) + ")");
  }
  return listing;
}

// The model: --model, else the one the store already holds, else the default.
Result<ModelCard> ModelForIngest(const IngestArgs& a, const Global& g) {
  std::string model = a.model;
  std::error_code ec;
  if (model.empty() && (IsPostgresUri(a.store) || std::filesystem::exists(a.store, ec))) {
    auto existing = OpenStore(a.store, Store::Mode::kReadOnly);
    if (existing.ok()) {
      NL_ASSIGN_OR_RETURN(auto info, (*existing)->GetCollection());
      if (info) model = info->model;
    } else if (existing.status().code() != Status::Code::kNotFound) {
      return existing.status();
    }
  }
  return FindModel(model.empty() ? kDefaultModel : model, ModelSearchDirs(g.model_dirs));
}

// What an ingest did, for the renderer.
struct IngestOutcome {
  std::string where, root, layout, model, backend, job, index_summary;
  bool shared = false;
  long long rows = -1;
  IngestReport report;
};

void PrintIngest(const IngestOutcome& o, bool as_json) {
  const IngestReport& r = o.report;
  if (as_json) {
    json j = {{"store", o.where},           {"dataset", o.root},
              {"layout", o.layout},         {"model", o.model},
              {"backend", o.backend},       {"listed", r.listed},
              {"inserted", r.inserted},     {"already_stored", r.already_stored},
              {"duplicates", r.duplicates}, {"failed", r.failed},
              {"problems", json::array()},  {"rows", o.rows},
              {"seconds", r.seconds},       {"interrupted", r.interrupted},
              {"index", o.index_summary}};
    if (o.shared) {
      j["job"] = o.job;
      j["batches"] = r.batches;
      j["abandoned_batches"] = r.abandoned_batches;
      j["embed_seconds"] = r.embed_seconds;
      j["store_seconds"] = r.store_seconds;
    }
    for (const auto& p : r.problems)
      j["problems"].push_back({{"path", p.path}, {"reason", p.reason}});
    PrintJson(j);
    return;
  }
  for (const auto& p : r.problems)
    std::printf("skipped %s: %s\n", TerminalSafe(p.path).c_str(), TerminalSafe(p.reason).c_str());
  const double rate = r.seconds > 0 ? r.inserted / r.seconds : 0;
  std::printf(
      "ingest %s (%s layout) -> %s with %s\n"
      "  %zu images listed: %zu inserted, %zu already stored, %zu duplicate content, %zu "
      "failed; %zu other problems\n"
      "  %.1f s (%.1f images/s embedded); store now holds %lld rows\n",
      o.root.c_str(), o.layout.c_str(), o.where.c_str(), o.model.c_str(), r.listed, r.inserted,
      r.already_stored, r.duplicates, r.failed, r.problems.size() - r.failed - r.duplicates,
      r.seconds, rate, o.rows);
  if (!o.index_summary.empty()) std::printf("  %s\n", o.index_summary.c_str());
  if (o.shared) {
    std::printf(
        "  job '%s': this worker committed %zu batches; embedding %.1f s, database %.2f s "
        "(%.1f%% of embedding)%s\n",
        o.job.c_str(), r.batches, r.embed_seconds, r.store_seconds,
        r.embed_seconds > 0 ? 100 * r.store_seconds / r.embed_seconds : 0.0,
        r.abandoned_batches
            ? (", " + std::to_string(r.abandoned_batches) + " claims lost and requeued").c_str()
            : "");
  }
}

int RunIngest(IngestArgs a, const Global& g) {
  auto listing = ListForIngest(a);
  if (!listing.ok()) return Fail(listing.status());
  auto card = ModelForIngest(a, g);
  if (!card.ok()) return Fail(card.status());
  auto embedder = MakeEmbedder(*card, g, false);
  if (!embedder.ok()) return Fail(embedder.status());
  auto sha = Sha256File(card->onnx_path);
  if (!sha.ok()) return Fail(sha.status());
  auto store = OpenForWriting(a.store, Store::Mode::kCreate);
  if (!store.ok()) return Fail(store.status());
  Status st = PrepareStoreForDataset(**store, *card, *sha, *listing);
  if (!st.ok()) return Fail(st);

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
  IngestOutcome o{(*store)->location(),  // a URI's password masked
                  listing->root,
                  DatasetLayoutName(listing->layout),
                  card->name,
                  (*embedder)->backend(),
                  opt.job,
                  "",
                  queue != nullptr,
                  -1,
                  *rep};
  // An existing index follows every ingest; --index creates one. Shared stores keep no
  // index file: each server builds its own.
  if (!rep->interrupted && !queue) {
    a.index_params.threads = a.threads;
    auto update = UpdateStoreIndex(**store, a.index, a.index_params);
    if (!update.ok()) return Fail(update.status().WithContext("rows stored, index not updated"));
    o.index_summary = IndexUpdateSummary(*update);
  }
  auto rows = (*store)->Count();
  o.rows = rows.ok() ? static_cast<long long>(*rows) : -1;
  PrintIngest(o, g.json);
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
