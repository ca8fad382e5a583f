// bench/embed_throughput: how fast images become stored vectors, against the engines alone.
//
// In one run, on the same images and model card:
//   (a) ONNX Runtime pure inference on tensors preprocessed beforehand (batch 1 and batch 8,
//       ORT's spinning workers on and off; the best of the four is the baseline),
//   (b) OpenCV DNN pure inference on the same tensors (a subset: it is slow),
//   (c) nearlabel's end-to-end ingest into a fresh SQLite store (read + sha256 + decode +
//       preprocess + embed + store), with its default pipeline,
// and prints images/s for each and the ratio end-to-end / ORT pure.
//
// Usage: embed_throughput --model NAME --dataset DIR [--images N] [--opencv-images N]
//                         [--threads N] [--repeat R]
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "common/fs.h"
#include "nearlabel/dataset.h"
#include "nearlabel/image.h"
#include "nearlabel/ingest.h"
#include "nearlabel/model.h"
#include "nearlabel/store.h"

namespace nearlabel {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The process's CPU seconds so far (all threads).
double ProcessCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Runs `pass` (which returns images/s) and sets *busy to the share of the cores' time the
// process used meanwhile: what is left below 1 is time a core sat idle.
template <typename Pass>
double TimeBusy(int cores, double* busy, Pass pass) {
  const double cpu0 = ProcessCpuSeconds();
  const auto t0 = Clock::now();
  const double rate = pass();
  *busy = (ProcessCpuSeconds() - cpu0) / (Seconds(t0) * cores);
  return rate;
}

[[noreturn]] void Die(const std::string& what, const Status& st) {
  std::fprintf(stderr, "embed_throughput: %s: %s\n", what.c_str(), st.ToString().c_str());
  std::exit(1);
}

struct Args {
  std::string model = "mobilenetv2-12-int8";
  std::string dataset;
  size_t images = 0;          // 0: all
  size_t opencv_images = 64;  // OpenCV DNN is timed on this many
  int threads = 0;
  int repeat = 3;              // timed passes per configuration; the best counts
  bool pipeline_spin = false;  // (c) uses nearlabel's defaults unless these say otherwise
  int pipeline_batch = 0;
  int pipeline_sessions = 0;
  int pipeline_run_batch = 0;
};

Args ParseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "embed_throughput: %s needs a value\n", k.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "--model") {
      a.model = value();
    } else if (k == "--dataset") {
      a.dataset = value();
    } else if (k == "--images") {
      a.images = std::stoul(value());
    } else if (k == "--opencv-images") {
      a.opencv_images = std::stoul(value());
    } else if (k == "--threads") {
      a.threads = std::stoi(value());
    } else if (k == "--pipeline-spin") {
      a.pipeline_spin = true;
    } else if (k == "--pipeline-sessions") {
      a.pipeline_sessions = std::stoi(value());
    } else if (k == "--pipeline-batch") {
      a.pipeline_batch = std::stoi(value());
    } else if (k == "--pipeline-run-batch") {
      a.pipeline_run_batch = std::stoi(value());
    } else if (k == "--repeat") {
      a.repeat = std::max(1, std::stoi(value()));
    } else {
      std::fprintf(stderr,
                   "usage: embed_throughput --model NAME --dataset DIR [--images N] "
                   "[--opencv-images N] [--threads N] [--repeat R] [--pipeline-spin] "
                   "[--pipeline-batch B] [--pipeline-sessions S] [--pipeline-run-batch R]\n");
      std::exit(k == "--help" || k == "-h" ? 0 : 2);
    }
  }
  if (a.dataset.empty()) {
    const char* root = std::getenv("NEARLABEL_DATASETS");
    if (!root) {
      std::fprintf(stderr, "embed_throughput: --dataset or NEARLABEL_DATASETS needed\n");
      std::exit(2);
    }
    a.dataset = std::string(root) + "/caltech-101";
  }
  return a;
}

// The stages of one end-to-end ingest against ORT's time for the same images.
void PrintWhereTheTimeGoes(const IngestReport& r, double ort_seconds, int cores) {
  const auto& p = r.prep;
  std::printf(
      "  where the time of the best end-to-end pass went (%.2f s wall; ORT pure: %.2f s):\n",
      r.seconds, ort_seconds);
  std::printf(
      "    preparation workers, summed over %d threads (beside inference): read %.2f s, sha256 "
      "%.2f s, decode %.2f s, preprocess %.2f s, thumbnail %.2f s\n",
      cores, p.read, p.sha256, p.decode, p.preprocess, p.thumbnail);
  std::printf(
      "    main thread: embedding %.2f s, waiting for prepared batches %.2f s, the rest %.2f s; "
      "writer thread (beside embedding): insert + commit %.2f s\n",
      r.embed_seconds, r.wait_for_prepared_seconds,
      r.seconds - r.embed_seconds - r.wait_for_prepared_seconds, r.store_seconds);
}

// Best images/s over `repeat` passes of embedding `n` preprocessed images in batches.
double TimeInference(Embedder& e, const std::vector<float>& tensors, size_t n, int batch,
                     int repeat) {
  const auto& p = e.card().preprocess;
  const size_t slot = static_cast<size_t>(3) * p.width * p.height;
  std::vector<float> out(static_cast<size_t>(batch) * e.dims());
  // Warm-up: the first runs allocate and plan.
  for (int i = 0; i < 2; ++i) {
    Status st = e.Embed(tensors.data(), 1, out.data());
    if (!st.ok()) Die("warm-up", st);
  }
  double best = 0;
  for (int r = 0; r < repeat; ++r) {
    const auto t0 = Clock::now();
    for (size_t i = 0; i < n; i += batch) {
      const int c = static_cast<int>(std::min<size_t>(batch, n - i));
      Status st = e.Embed(tensors.data() + i * slot, c, out.data());
      if (!st.ok()) Die("inference", st);
    }
    best = std::max(best, n / Seconds(t0));
  }
  return best;
}

// Best images/s over `repeat` passes of `n` preprocessed images through single-thread
// embedders, each on its own thread taking the next image as soon as it is free: no join
// between batches: the most ORT does with these sessions.
double TimeFreeRunning(std::vector<std::unique_ptr<Embedder>>& embedders,
                       const std::vector<float>& tensors, size_t n, int repeat) {
  const auto& p = embedders[0]->card().preprocess;
  const size_t slot = static_cast<size_t>(3) * p.width * p.height;
  double best = 0;
  for (int r = 0; r < repeat; ++r) {
    std::atomic<size_t> next{0};
    const auto t0 = Clock::now();
    std::vector<std::thread> threads;
    for (auto& e : embedders) {
      threads.emplace_back([&, e = e.get()] {
        std::vector<float> out(e->dims());
        for (size_t i; (i = next.fetch_add(1)) < n;) {
          Status st = e->Embed(tensors.data() + i * slot, 1, out.data());
          if (!st.ok()) Die("inference", st);
        }
      });
    }
    for (auto& t : threads) t.join();
    best = std::max(best, n / Seconds(t0));
  }
  return best;
}

int Main(int argc, char** argv) {
  const Args a = ParseArgs(argc, argv);
  auto card = FindModel(a.model, ModelSearchDirs({}));
  if (!card.ok()) Die("model", card.status());
  auto listing = ListDataset(a.dataset, DatasetLayout::kAuto);
  if (!listing.ok()) Die("dataset", listing.status());
  if (a.images > 0 && listing->items.size() > a.images) listing->items.resize(a.images);
  const size_t n = listing->items.size();
  auto ort_info = LoadOnnxRuntime();
  if (!ort_info.ok()) Die("ONNX Runtime", ort_info.status());
  std::printf("embed_throughput: model %s, %zu images of %s, ONNX Runtime %s, %u cores\n",
              card->name.c_str(), n, a.dataset.c_str(), ort_info->version.c_str(),
              std::thread::hardware_concurrency());

  // Preprocess every image once (one thread, timed: the per-image cost the pipeline hides).
  const auto& p = card->preprocess;
  const size_t slot = static_cast<size_t>(3) * p.width * p.height;
  std::vector<float> tensors(n * slot);
  auto t0 = Clock::now();
  for (size_t i = 0; i < n; ++i) {
    auto bytes = ReadFileToString(listing->items[i].image_path);
    if (!bytes.ok()) Die("read", bytes.status());
    auto img = DecodeImage(*bytes);
    if (!img.ok()) Die(listing->items[i].image_path, img.status());
    PreprocessInto(*img, p, tensors.data() + i * slot);
  }
  const double prep_rate = n / Seconds(t0);
  std::printf("  read + decode + preprocess, 1 thread:           %8.1f images/s\n", prep_rate);

  // (a) ONNX Runtime alone, four configurations, and (c) end-to-end ingest, measured in
  // alternation so that drifting load on a shared machine hits all of them alike.
  struct Config {
    int sessions;
    int batch;
    bool spin;
    std::unique_ptr<Embedder> embedder;
    double best = 0;
    // Free running: one single-thread embedder per core, each on its own thread.
    std::vector<std::unique_ptr<Embedder>> free_running;
  };
  std::vector<Config> configs;
  const int cores =
      a.threads > 0 ? a.threads : static_cast<int>(std::thread::hardware_concurrency());
  const struct {
    int sessions, batch;
    bool spin;
  } kConfigs[] = {{1, 1, true},  {1, 8, true},          {1, 1, false},
                  {1, 8, false}, {cores, cores, false}, {cores, 4 * cores, false}};
  for (const auto& k : kConfigs) {
    if (k.sessions > 1 && cores == 1) continue;
    EmbedderOptions eo;
    eo.threads = cores;
    eo.sessions = k.sessions;
    eo.spin_wait = k.spin;
    eo.max_batch = k.batch;
    // Each session runs its whole share at once, whatever the card says (ORT at its plain use).
    eo.run_batch = std::max(1, k.batch / k.sessions);
    auto e = CreateOnnxRuntimeEmbedder(*card, eo);
    if (!e.ok()) Die("ONNX Runtime embedder", e.status());
    configs.push_back({k.sessions, (*e)->max_batch(), k.spin, std::move(*e), 0, {}});
  }
  if (cores > 1) {
    Config free{cores, 1, false, nullptr, 0, {}};
    for (int i = 0; i < cores; ++i) {
      EmbedderOptions eo;
      eo.threads = 1;
      eo.sessions = 1;
      eo.max_batch = 1;
      auto e = CreateOnnxRuntimeEmbedder(*card, eo);
      if (!e.ok()) Die("ONNX Runtime embedder", e.status());
      free.free_running.push_back(std::move(*e));
    }
    configs.push_back(std::move(free));
  }
  auto time_config = [&](Config& c) {
    if (c.free_running.empty()) return TimeInference(*c.embedder, tensors, n, c.batch, 1);
    return TimeFreeRunning(c.free_running, tensors, n, 1);
  };
  EmbedderOptions pipeline_options;  // what `nearlabel ingest` uses
  pipeline_options.threads = a.threads;
  pipeline_options.spin_wait = a.pipeline_spin;
  pipeline_options.max_batch = a.pipeline_batch;
  pipeline_options.sessions = a.pipeline_sessions;
  pipeline_options.run_batch = a.pipeline_run_batch;
  auto pipeline_embedder = CreateOnnxRuntimeEmbedder(*card, pipeline_options);
  if (!pipeline_embedder.ok()) Die("ONNX Runtime embedder", pipeline_embedder.status());
  const std::string dir =
      std::filesystem::temp_directory_path() / ("embed_throughput_" + std::to_string(::getpid()));
  // One end-to-end ingest of all n images into a fresh store; returns images/s (and its
  // report in *report).
  auto ingest_pass = [&](IngestReport* report) {
    std::filesystem::create_directories(dir);
    double rate = 0;
    {
      auto store = OpenStore(dir + "/bench.db", Store::Mode::kCreate);
      if (!store.ok()) Die("store", store.status());
      CollectionInfo info;
      info.model = card->name;
      info.model_sha256 = card->sha256;
      info.dims = card->dims;
      Status st = (*store)->EnsureCollection(info);
      if (!st.ok()) Die("store", st);
      const auto start = Clock::now();
      auto rep = Ingest(*listing, **pipeline_embedder, **store, {}, {}, nullptr);
      const double s = Seconds(start);
      if (!rep.ok()) Die("ingest", rep.status());
      if (rep->inserted != n) {
        std::fprintf(stderr, "embed_throughput: ingest stored %zu of %zu images\n", rep->inserted,
                     n);
        std::exit(1);
      }
      rate = rep->inserted / s;
      *report = *rep;
      report->seconds = s;
    }
    std::filesystem::remove_all(dir);
    return rate;
  };

  // A first round picks ORT's best configuration. Then the baseline and the end-to-end ingest are
  // timed alternately, `repeat` passes each, so both see the same drift of a shared machine
  // and the same number of chances; the best pass of each counts.
  // (Two passes each, configurations alternating: one lucky pass on this noisy machine would
  // otherwise pick a configuration that is not ORT's best.)
  for (int r = 0; r < 2; ++r) {
    for (auto& c : configs) {
      c.best = std::max(c.best, time_config(c));
    }
  }
  // Two baselines: ORT's best configuration as an Embed call runs it (each batch split over the
  // sessions, which wait for each other at its end), and the sessions free running (the most
  // ORT can do on these cores).
  Config* joined = nullptr;
  Config* free = nullptr;
  for (auto& c : configs) {
    if (!c.free_running.empty()) {
      free = &c;
    } else if (!joined || c.best > joined->best) {
      joined = &c;
    }
  }
  std::vector<Config*> baselines = {joined};
  if (free) baselines.push_back(free);
  std::vector<double> base_best(baselines.size()), e2e_rates;
  std::vector<std::vector<double>> ratios(baselines.size());
  IngestReport best_report;
  for (int r = 0; r < a.repeat; ++r) {
    std::printf("  pass %d:", r + 1);
    std::vector<double> pure(baselines.size());
    for (size_t b = 0; b < baselines.size(); ++b) {
      double busy = 0;
      pure[b] = TimeBusy(cores, &busy, [&] { return time_config(*baselines[b]); });
      base_best[b] = std::max(base_best[b], pure[b]);
      std::printf(" ORT pure %s %.1f (cores busy %.1f %%),",
                  baselines[b] == free ? "free running" : "joined", pure[b], 100 * busy);
    }
    double busy = 0;
    IngestReport report;
    const double e2e = TimeBusy(cores, &busy, [&] { return ingest_pass(&report); });
    if (e2e_rates.empty() || e2e > *std::max_element(e2e_rates.begin(), e2e_rates.end())) {
      best_report = report;
    }
    e2e_rates.push_back(e2e);
    std::printf(" end to end %.1f (cores busy %.1f %%); ratios", e2e, 100 * busy);
    for (size_t b = 0; b < baselines.size(); ++b) {
      ratios[b].push_back(e2e / pure[b]);
      std::printf(" %.3f", e2e / pure[b]);
    }
    std::printf("\n");
  }
  std::printf("  first round (picks the baselines):\n");
  for (const auto& c : configs) {
    char config[64];
    if (c.free_running.empty()) {
      std::snprintf(config, sizeof config, "%d session(s) x %d thread(s), batch %d, spin %s",
                    c.sessions, cores / c.sessions, c.batch, c.spin ? "on" : "off");
    } else {
      std::snprintf(config, sizeof config, "%d sessions x 1 thread, free running", c.sessions);
    }
    std::printf("  (a) ONNX Runtime pure, %-42s %8.1f images/s%s\n", config, c.best,
                &c == joined ? "  <- baseline, joined"
                : &c == free ? "  <- baseline, free running"
                             : "");
  }
  const double e2e_best = *std::max_element(e2e_rates.begin(), e2e_rates.end());

  // (b) OpenCV DNN alone, on a subset.
  {
    const size_t m = std::min(n, a.opencv_images);
    EmbedderOptions eo;
    eo.threads = a.threads;
    auto e = CreateOpenCvEmbedder(*card, eo);
    if (!e.ok()) Die("OpenCV embedder", e.status());
    const double b1 = TimeInference(**e, tensors, m, 1, 1);
    std::printf("  (b) OpenCV DNN pure inference, batch 1 (%zu images): %8.1f images/s\n", m, b1);
  }
  std::printf(
      "  (c) nearlabel ingest end to end (its defaults: %d lanes of %d image(s) a session run): "
      "%8.1f images/s\n",
      (*pipeline_embedder)->lanes(), (*pipeline_embedder)->lane_batch(), e2e_best);
  PrintWhereTheTimeGoes(best_report, n / base_best.back(), cores);
  for (size_t b = 0; b < baselines.size(); ++b) {
    std::sort(ratios[b].begin(), ratios[b].end());
    std::printf(
        "  ratio end-to-end / ORT pure %s (%.1f images/s): best passes %.3f, median pass %.3f\n",
        baselines[b] == free ? "free running" : "joined", base_best[b], e2e_best / base_best[b],
        ratios[b][ratios[b].size() / 2]);
  }
  // An estimate (not a bound: cache effects differ) of what an end-to-end run can reach on
  // these cores: ORT's time free running plus the preparation's CPU time spread over every core.
  const auto& prep = best_report.prep;
  const double prep_cpu = prep.read + prep.sha256 + prep.decode + prep.preprocess + prep.thumbnail;
  const double limit = n / (n / base_best.back() + prep_cpu / cores);
  std::printf(
      "  estimate for end to end (ORT pure %s + %.2f s of preparation CPU time over %d "
      "cores): %.1f images/s, ratio %.3f\n",
      free ? "free running" : "joined", prep_cpu, cores, limit, limit / base_best.back());
  return 0;
}

}  // namespace
}  // namespace nearlabel

int main(int argc, char** argv) { return nearlabel::Main(argc, argv); }
