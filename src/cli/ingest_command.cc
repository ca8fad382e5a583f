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
  std::string resize, flip_average, centre;  // "" = the card's (a new store) or the store's
  double power = 0;                          // 0 = the card's or the store's
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

// The collection info of an existing store (nullopt for a new one).
Result<std::optional<CollectionInfo>> ExistingCollection(const std::string& location) {
  std::error_code ec;
  if (!IsPostgresUri(location) && !std::filesystem::exists(location, ec))
    return std::optional<CollectionInfo>();
  auto existing = OpenStore(location, Store::Mode::kReadOnly);
  if (!existing.ok()) {
    if (existing.status().code() == Status::Code::kNotFound) return std::optional<CollectionInfo>();
    return existing.status();
  }
  return (*existing)->GetCollection();
}

// The card's embedding options with the --resize/--flip-average/--power given.
EmbeddingOptions RequestedEmbedding(const IngestArgs& a, const ModelCard& card) {
  EmbeddingOptions e = card.embedding;
  if (!a.resize.empty()) e.resize = a.resize;
  if (!a.flip_average.empty()) e.flip_average = a.flip_average == "on";
  if (a.power > 0) e.power = a.power;
  if (!a.centre.empty()) e.centre = a.centre == "on";
  return e;
}

// The model: --model, else the one the store already holds, else the default; with the
// store's embedding options (an existing store), else the card's and the flags'.
Result<ModelCard> ModelForIngest(const IngestArgs& a, const Global& g) {
  NL_ASSIGN_OR_RETURN(std::optional<CollectionInfo> info, ExistingCollection(a.store));
  const std::string model = !a.model.empty() ? a.model : info ? info->model : kDefaultModel;
  NL_ASSIGN_OR_RETURN(ModelCard card, FindModel(model, ModelSearchDirs(g.model_dirs)));
  const bool shared = IsPostgresUri(a.store);
  if (shared && a.centre == "on") {
    return Status::Unsupported(
        "--centre on needs a SQLite store; PostgreSQL stores are not "
        "centred");
  }
  NL_ASSIGN_OR_RETURN(ModelCard chosen,
                      CardForIngest(card, info, RequestedEmbedding(a, card), shared));
  if (!info || info->model != card.name) return chosen;  // another model: refused later
  // An existing store: flags may only repeat its options.
  NL_ASSIGN_OR_RETURN(ModelCard requested,
                      WithEmbeddingOptions(card, RequestedEmbedding(a, chosen)));
  if (!(requested.embedding == chosen.embedding)) {
    return Status::Mismatch("store " + MaskedLocation(a.store) +
                            " was made with the embedding options " +
                            EmbeddingOptionsJson(chosen.embedding) + ", not " +
                            EmbeddingOptionsJson(requested.embedding) +
                            ": rows made differently are not comparable; leave out --resize, "
                            "--flip-average, --power and --centre, or ingest into a new store");
  }
  return chosen;
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
  // The centre follows the rows before any index is built on them.
  std::string centred;
  if (Status c = UpdateStoreCentre(**store, *card, &centred); !c.ok()) {
    return Fail(c.WithContext("rows stored uncentred"));
  }
  if (!centred.empty() && !g.json) {
    std::printf("%s%s\n", centred.c_str(),
                centred.find("doubled") != std::string::npos
                    ? "; a running `nearlabel serve` of this store must be restarted to embed "
                      "queries on the new mean"
                    : "");
  }
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
  const std::string fixed =
      " Recorded in a new store and used for every image embedded for it afterwards (an "
      "existing store keeps its own; see `nearlabel store info`).";
  ingest
      ->add_option("--resize", ia.resize,
                   "crop (shorter side to the input size, centre crop) or direct (the whole "
                   "image squeezed to the input size); default: the model card's." +
                       fixed)
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, std::string>{{"crop", "shorter_side_crop"},
                                             {"shorter_side_crop", "shorter_side_crop"},
                                             {"direct", "direct"}}));
  ingest
      ->add_option("--flip-average", ia.flip_average,
                   "on: embed each image and its mirror image and average the two (twice the "
                   "inference time); off; default: the model card's." +
                       fixed)
      ->check(CLI::IsMember({"on", "off"}));
  ingest
      ->add_option("--power", ia.power,
                   "Power normalisation: each feature value to this power before the final "
                   "normalisation, within (0, 1] (1: none); default: the model card's." +
                       fixed)
      ->check(CLI::Range(1e-3, 1.0));
  ingest
      ->add_option("--centre", ia.centre,
                   "on: subtract the store's mean vector and normalise again; the first ingest "
                   "computes the mean and rewrites its rows, a later one again once the store "
                   "has doubled; off; default: the model card's (off for PostgreSQL stores)." +
                       fixed)
      ->check(CLI::IsMember({"on", "off"}));
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
