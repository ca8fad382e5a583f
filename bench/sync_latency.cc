// Sync latency between two `nearlabel serve` nodes on one PostgreSQL store: for each image,
// POST /v1/items to node A (the row is committed when A answers), then poll node B's
// GET /v1/items/ID every millisecond until it answers 200. Prints p50/p99/max over the images,
// and beside them the floor the figure cannot go below: B's own GET round trip.
// Usage: sync_latency URL_A URL_B TOKEN IMAGE...   (bench/pg_sync_latency.sh runs it)
#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  // Nearest rank: the ceil(q * n)-th smallest.
  const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, rank > 0 ? rank - 1 : 0)];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: sync_latency URL_A URL_B TOKEN IMAGE...\n");
    return 2;
  }
  httplib::Client a(argv[1]), b(argv[2]);
  a.set_bearer_token_auth(argv[3]);
  a.set_read_timeout(30, 0);
  std::vector<double> latency, floor;
  int failures = 0;
  for (int i = 4; i < argc; ++i) {
    std::ifstream in(argv[i], std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    const httplib::MultipartFormDataItems form = {{"image", bytes.str(), "x.jpg", "image/jpeg"},
                                                  {"label", "sync-bench", "", ""}};
    auto posted = a.Post("/v1/items", form);
    if (!posted || posted->status != 201) {
      ++failures;
      continue;
    }
    const size_t at = posted->body.find("\"id\":");
    const std::string id =
        posted->body.substr(at + 5, posted->body.find_first_of(",}", at) - at - 5);
    const auto committed = Clock::now();
    for (;;) {
      const auto t = Clock::now();
      auto got = b.Get("/v1/items/" + id);
      floor.push_back(Ms(Clock::now() - t));
      if (got && got->status == 200) break;
      if (Clock::now() - committed > std::chrono::seconds(10)) {
        ++failures;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    latency.push_back(Ms(Clock::now() - committed));
  }
  std::printf("sync latency (POST on A committed -> GET on B finds the row), %zu inserts:\n",
              latency.size());
  std::printf("  p50 %.1f ms   p99 %.1f ms   max %.1f ms   (%d failed)\n", Quantile(latency, 0.5),
              Quantile(latency, 0.99), *std::max_element(latency.begin(), latency.end()), failures);
  std::printf("baseline: one GET round trip to B (the polling floor): p50 %.2f ms\n",
              Quantile(floor, 0.5));
  return failures ? 1 : 0;
}
