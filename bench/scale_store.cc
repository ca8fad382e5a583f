// bench/scale_store: synthetic stores of any size for bench/scale.sh, and the in-process
// figures of the collection engine on them.
//
//   scale_store make SOURCE.db OUT.db ROWS   rows = noisy unit-length copies of SOURCE's real
//                                            vectors (its model, dims and labels), seeded
//   scale_store measure STORE [--queries 200] open time (median of 5 fresh opens), first answer
//                                            in process, steady queries/s exact and through the
//                                            index, peak RSS; queries are noisy copies of rows
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "nearlabel/collection.h"
#include "nearlabel/store.h"

namespace nearlabel {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void Normalize(std::vector<float>* v) {
  double n = 0;
  for (float x : *v) n += static_cast<double>(x) * x;
  const float inv = static_cast<float>(1.0 / std::sqrt(std::max(n, 1e-30)));
  for (float& x : *v) x *= inv;
}

int Make(const std::string& source, const std::string& out, size_t rows) {
  auto src = OpenStore(source, Store::Mode::kReadOnly);
  if (!src.ok()) return std::fprintf(stderr, "%s\n", src.status().message().c_str()), 1;
  auto info = (*src)->GetCollection();
  auto table = (*src)->LoadVectors("");
  if (!info.ok() || !*info || !table.ok() || table->size() == 0) {
    std::fprintf(stderr, "source store %s is empty or unreadable\n", source.c_str());
    return 1;
  }
  auto dst = OpenStore(out, Store::Mode::kCreate);
  if (!dst.ok()) return std::fprintf(stderr, "%s\n", dst.status().message().c_str()), 1;
  Status st = (*dst)->EnsureCollection(**info);
  if (!st.ok()) return std::fprintf(stderr, "%s\n", st.message().c_str()), 1;
  std::mt19937 rng(42);
  std::normal_distribution<float> noise(0.0f, 0.02f);
  const size_t d = static_cast<size_t>(table->dims);
  const double t0 = Now();
  std::vector<NewItem> batch;
  for (size_t i = 0; i < rows; ++i) {
    const size_t from = i % table->size();
    NewItem it;
    it.source = table->sources[from] + "#" + std::to_string(i);
    char sha[65];
    std::snprintf(sha, sizeof sha, "%064zx", i);
    it.sha256 = sha;
    it.metadata_json = table->metadata[from];
    it.embedding.assign(table->row(from), table->row(from) + d);
    for (float& x : it.embedding) x += noise(rng);
    Normalize(&it.embedding);
    batch.push_back(std::move(it));
    if (batch.size() == 2048 || i + 1 == rows) {
      auto r = (*dst)->InsertBatch(batch);
      if (!r.ok()) return std::fprintf(stderr, "%s\n", r.status().message().c_str()), 1;
      batch.clear();
    }
  }
  std::printf("made %s: %zu rows of %zu-d in %.1f s\n", out.c_str(), rows, d, Now() - t0);
  return 0;
}

long PeakRssMb() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024;
}

int Measure(const std::string& location, size_t queries) {
  std::vector<double> opens;
  for (int i = 0; i < 5; ++i) {
    const double t0 = Now();
    auto c = Collection::Open(location);
    if (!c.ok()) return std::fprintf(stderr, "%s\n", c.status().message().c_str()), 1;
    opens.push_back(Now() - t0);
  }
  std::sort(opens.begin(), opens.end());
  std::vector<std::vector<float>> qs;
  {
    // Queries: stored rows (read by id) with noise, prepared before the timed open.
    auto c = Collection::Open(location);
    if (!c.ok()) return 1;
    const size_t rows = (*c)->size();
    std::mt19937 rng(7);
    std::normal_distribution<float> noise(0.0f, 0.02f);
    for (size_t i = 0; i < queries; ++i) {
      auto item = (*c)->GetItem(static_cast<int64_t>(1 + (i * 7919) % rows));
      if (!item.ok()) continue;
      std::vector<float> q = item->embedding;
      for (float& x : q) x += noise(rng);
      Normalize(&q);
      qs.push_back(std::move(q));
    }
  }
  const double t0 = Now();
  auto c = Collection::Open(location);
  if (!c.ok()) return std::fprintf(stderr, "%s\n", c.status().message().c_str()), 1;
  const CollectionState s = (*c)->state();
  const int dims = (*c)->info().dims;
  QueryOptions o;
  o.k = 10;
  auto first = (*c)->Search(qs[0].data(), o);
  const double first_s = Now() - t0;
  if (!first.ok()) return std::fprintf(stderr, "%s\n", first.status().message().c_str()), 1;
  auto qps = [&](bool exact, size_t n) {
    QueryOptions q = o;
    q.exact = exact;
    const double t = Now();
    for (size_t i = 0; i < n; ++i) (void)(*c)->Search(qs[i % qs.size()].data(), q);
    return static_cast<double>(n) / (Now() - t);
  };
  const double indexed = s.index_rows ? qps(false, qs.size()) : 0;
  const double exact = qps(true, std::max<size_t>(5, std::min<size_t>(qs.size(), 2000000 / s.rows)));
  std::printf(
      "%s: %zu rows x %d, index %zu rows: open %.2f ms (median of 5), first answer in process "
      "%.1f ms, indexed %.0f q/s, exact %.1f q/s, peak RSS %ld MB\n",
      location.c_str(), s.rows, dims, s.index_rows, opens[2] * 1e3, first_s * 1e3, indexed, exact,
      PeakRssMb());
  return 0;
}

}  // namespace
}  // namespace nearlabel

int main(int argc, char** argv) {
  if (argc >= 5 && std::strcmp(argv[1], "make") == 0) {
    return nearlabel::Make(argv[2], argv[3], std::strtoull(argv[4], nullptr, 10));
  }
  if (argc >= 3 && std::strcmp(argv[1], "measure") == 0) {
    size_t q = 200;
    if (argc >= 5 && std::strcmp(argv[3], "--queries") == 0) q = std::strtoull(argv[4], nullptr, 10);
    return nearlabel::Measure(argv[2], q);
  }
  std::fprintf(stderr,
               "usage: scale_store make SOURCE.db OUT.db ROWS | scale_store measure STORE "
               "[--queries N]\n");
  return 2;
}
