// nearlabel command-line interface: global options, then one file per command group
// (src/cli/*_command.cc) adds its subcommands. Exit codes: 0 ok, 1 error, 2 usage.
#include "cli/cli.h"

namespace nearlabel::cli {
namespace {

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

  Runner run;
  AddIngestCommands(app, g, &run);
  AddQueryCommands(app, g, &run);
  AddEvalCommand(app, g, &run);
  AddAuditCommand(app, g, &run);
  AddStoreCommands(app, g, &run);
  AddAnomalyCommands(app, g, &run);
  AddIndexCommands(app, g, &run);
  AddServeCommand(app, g, &run);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  return run ? run() : 2;
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
