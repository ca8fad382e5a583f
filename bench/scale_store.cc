// bench/scale_store: synthetic stores of any size for bench/scale.sh, and the in-process
// figures of the collection engine on them.
//
//   scale_store make SOURCE.db OUT.db ROWS   rows = noisy unit-length copies of SOURCE's real
//                                            vectors (its model, dims and labels), seeded
//   scale_store measure STORE [--queries 200] [--dump PREFIX]
//                                            open time (median of 5 fresh opens), first answer
//                                            in process, steady queries/s exact and through the
//                                            index (recall@10 against exact), peak RSS; queries
//                                            are noisy copies of rows; --dump writes them and
//                                            their exact top 10 for bench/lancedb/scale.mjs
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
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
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

// Writes the queries (float32, nq x dims) and their exact top 10 (one line of ids each) for
// bench/lancedb/scale.mjs.
void Dump(const std::string& prefix, const Collection& c,
          const std::vector<std::vector<float>>& qs) {
  FILE* q = std::fopen((prefix + ".queries").c_str(), "wb");
  FILE* e = std::fopen((prefix + ".exact").c_str(), "w");
  if (!q || !e) return;
  QueryOptions o;
  o.k = 10;
  o.exact = true;
  for (const auto& v : qs) {
    std::fwrite(v.data(), sizeof(float), v.size(), q);
    auto a = c.Search(v.data(), o);
    for (size_t i = 0; a.ok() && i < a->neighbors.size(); ++i) {
      std::fprintf(e, "%s%lld", i ? " " : "", static_cast<long long>(a->neighbors[i].id));
    }
    std::fprintf(e, "\n");
  }
  std::fclose(q);
  std::fclose(e);
}

int Measure(const std::string& location, size_t queries, const std::string& dump) {
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
  // Recall of the indexed answers against exact ones, on the first 50 queries.
  size_t hits = 0, total = 0;
  for (size_t i = 0; i < std::min<size_t>(50, qs.size()); ++i) {
    QueryOptions e = o;
    e.exact = true;
    auto want = (*c)->Search(qs[i].data(), e);
    auto got = (*c)->Search(qs[i].data(), o);
    if (!want.ok() || !got.ok()) continue;
    for (const auto& g : got->neighbors) {
      for (const auto& w : want->neighbors) hits += g.id == w.id;
    }
    total += want->neighbors.size();
  }
  const double indexed = s.index_rows ? qps(false, qs.size()) : 0;
  const double exact =
      qps(true, std::max<size_t>(5, std::min<size_t>(qs.size(), 2000000 / s.rows)));
  std::printf(
      "%s: %zu rows x %d, index %zu rows: open %.2f ms (median of 5), first answer in process "
      "%.1f ms, indexed %.0f q/s (recall@10 %.4f), exact %.1f q/s, peak RSS %ld MB\n",
      location.c_str(), s.rows, dims, s.index_rows, opens[2] * 1e3, first_s * 1e3, indexed,
      total ? static_cast<double>(hits) / static_cast<double>(total) : 0.0, exact, PeakRssMb());
  if (!dump.empty()) Dump(dump, **c, qs);
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
    std::string dump;
    for (int i = 3; i + 1 < argc; i += 2) {
      if (std::strcmp(argv[i], "--queries") == 0) q = std::strtoull(argv[i + 1], nullptr, 10);
      if (std::strcmp(argv[i], "--dump") == 0) dump = argv[i + 1];
    }
    return nearlabel::Measure(argv[2], q, dump);
  }
  std::fprintf(stderr,
               "usage: scale_store make SOURCE.db OUT.db ROWS | scale_store measure STORE "
               "[--queries N] [--dump PREFIX]\n");
  return 2;
}
