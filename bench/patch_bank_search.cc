// Nearest-patch search of an anomaly model's bank: the exact sgemm scan (NearestPatches) against
// the HNSW graph (PatchBankIndex), over real projected patches, at several bank sizes.
//
// Usage: patch_bank_search STORE [MODEL_NAME]
// The model should hold a large bank (`anomaly fit --coreset 1` keeps every patch); banks of
// 5k, 14k, 30k, 57k and all rows are drawn from it at random, 784 other rows (one 28x28 image's
// worth) are the queries. Prints, per size: the scan's time (the baseline), the graph's build time,
// and per ef the walk's time, its recall@1 and how far its distances are from the exact ones.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <random>

#include "nearlabel/anomaly.h"
#include "nearlabel/store.h"
#include "timing.h"

using namespace nearlabel;

namespace {}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: patch_bank_search STORE [MODEL_NAME]\n");
    return 2;
  }
  auto store = OpenStore(argv[1], Store::Mode::kReadOnly);
  if (!store.ok()) return std::fprintf(stderr, "%s\n", store.status().message().c_str()), 1;
  auto blob = (*store)->GetBlob(AnomalyModelKey(argc > 2 ? argv[2] : "default"));
  if (!blob.ok()) return std::fprintf(stderr, "%s\n", blob.status().message().c_str()), 1;
  auto model = AnomalyModel::Parse(*blob);
  if (!model.ok()) return std::fprintf(stderr, "%s\n", model.status().message().c_str()), 1;
  const int dims = model->projector.dims();
  const size_t all = model->bank_rows();
  constexpr size_t kQueries = 784;
  std::vector<size_t> order(all);
  std::iota(order.begin(), order.end(), size_t{0});
  std::shuffle(order.begin(), order.end(), std::mt19937(1));
  std::vector<float> queries;
  for (size_t i = 0; i < kQueries; ++i) {
    const float* r = model->bank.data() + order[i] * dims;
    queries.insert(queries.end(), r, r + dims);
  }
  std::printf("bank of %zu patches, %d-d; %zu query patches held out of it\n", all, dims, kQueries);
  std::printf("%9s %10s %10s %4s %10s %8s %9s %9s %8s\n", "bank", "scan ms", "build s", "ef",
              "walk ms", "speed-up", "recall@1", "max err", "max(img)");
  for (size_t size : {size_t{5000}, size_t{14000}, size_t{30000}, size_t{57000}, all - kQueries}) {
    if (size > all - kQueries) continue;
    std::vector<float> bank;
    bank.reserve(size * dims);
    for (size_t i = kQueries; i < kQueries + size; ++i) {
      const float* r = model->bank.data() + order[i] * dims;
      bank.insert(bank.end(), r, r + dims);
    }
    std::vector<float> exact;
    const double scan_ms =
        1e3 * bench::BestSeconds(3, [&] {
          NearestPatches(bank.data(), size, queries.data(), kQueries, dims, &exact, nullptr);
        });
    const float exact_max = *std::max_element(exact.begin(), exact.end());
    for (int ef : {16, 32, 64}) {
      PatchBankIndexParams p;
      p.ef = ef;
      const auto t0 = std::chrono::steady_clock::now();
      auto index = PatchBankIndex::Build(bank.data(), size, dims, p);
      const double build_s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::vector<float> walk;
      const double walk_ms =
          1e3 * bench::BestSeconds(3, [&] { index->Nearest(queries.data(), kQueries, &walk); });
      size_t hits = 0;
      double max_err = 0;
      for (size_t q = 0; q < kQueries; ++q) {
        if (walk[q] <= exact[q] * 1.0001f + 1e-6f) ++hits;
        max_err = std::max(max_err, static_cast<double>(walk[q] / std::max(exact[q], 1e-9f) - 1));
      }
      const float walk_max = *std::max_element(walk.begin(), walk.end());
      std::printf("%9zu %10.1f %10.2f %4d %10.1f %7.1fx %8.2f%% %8.2f%% %+7.3f%%\n", size, scan_ms,
                  build_s, ef, walk_ms, scan_ms / walk_ms, 100.0 * hits / kQueries, 100 * max_err,
                  100.0 * (walk_max / exact_max - 1));
    }
  }
  std::printf(
      "(scan: exact sgemm, the baseline; walk: HNSW M=16, efC=100; max(img): the image "
      "score, the largest patch distance, walk vs scan)\n");
  return 0;
}
