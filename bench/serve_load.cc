// bench/serve_load: a bounded HTTP load of POST /v1/classify against a running
// `nearlabel serve` (cpp-httplib's client; one connection per client thread, kept alive).
// Usage: serve_load URL IMAGE [--seconds 30] [--clients 8] [--rate R]
// Closed loop by default: each client sends its next request when the last is answered.
// --rate R: open loop, R requests/s in all, each with a scheduled start (request i at i/R s)
// taken by whichever client is free; latency counts from the scheduled start, so waiting for
// a free connection or a busy server is charged (no coordinated omission).
// Prints requests/s, p50/p90/p99 latency and the number of failed requests (any status but
// 200, or a broken connection). bench/serve_load.sh starts the server and runs the baseline.
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: serve_load URL IMAGE [--seconds 30] [--clients 8]\n");
    return 2;
  }
  const std::string url = argv[1];
  std::ifstream f(argv[2], std::ios::binary);
  const std::string image((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (image.empty()) {
    std::fprintf(stderr, "serve_load: cannot read %s\n", argv[2]);
    return 1;
  }
  double seconds = 30;
  double rate = 0;  // 0: closed loop
  int clients = 8;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--seconds") seconds = std::stod(argv[i + 1]);
    if (k == "--clients") clients = std::stoi(argv[i + 1]);
    if (k == "--rate") rate = std::stod(argv[i + 1]);
  }
  using Clock = std::chrono::steady_clock;
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  std::mutex mu;
  std::vector<double> latencies_ms;
  std::atomic<size_t> errors{0};
  std::string first_error;
  std::vector<std::thread> pool;
  const auto t0 = Clock::now();
  std::atomic<size_t> next_slot{0};
  const size_t slots = rate > 0 ? static_cast<size_t>(rate * seconds) : 0;
  for (int c = 0; c < clients; ++c) {
    pool.emplace_back([&] {
      httplib::Client cli(url);
      cli.set_keep_alive(true);
      // Request headers and body go out in two writes: without TCP_NODELAY, Nagle holds the
      // body until the server's delayed ACK (~40 ms a request, charged to the server).
      cli.set_tcp_nodelay(true);
      cli.set_read_timeout(60, 0);
      std::vector<double> mine;
      const httplib::MultipartFormDataItems form = {{"image", image, "query.jpg", "image/jpeg"}};
      for (;;) {
        Clock::time_point s = Clock::now();
        if (rate > 0) {
          const size_t slot = next_slot++;
          if (slot >= slots) break;
          s = t0 + std::chrono::duration_cast<Clock::duration>(
                       std::chrono::duration<double>(static_cast<double>(slot) / rate));
          std::this_thread::sleep_until(s);
        } else if (s >= end) {
          break;
        }
        auto res = cli.Post("/v1/classify", form);
        mine.push_back(std::chrono::duration<double, std::milli>(Clock::now() - s).count());
        if (!res || res->status != 200) {
          ++errors;
          std::lock_guard<std::mutex> lock(mu);
          if (first_error.empty()) {
            first_error = res ? std::to_string(res->status) + " " + res->body
                              : "connection: " + httplib::to_string(res.error());
          }
        }
      }
      std::lock_guard<std::mutex> lock(mu);
      latencies_ms.insert(latencies_ms.end(), mine.begin(), mine.end());
    });
  }
  for (auto& t : pool) t.join();
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  std::sort(latencies_ms.begin(), latencies_ms.end());
  auto pct = [&](double p) {
    return latencies_ms.empty()
               ? 0.0
               : latencies_ms[std::min(latencies_ms.size() - 1,
                                       static_cast<size_t>(p * latencies_ms.size()))];
  };
  std::printf(
      "serve_load: %zu classify requests in %.1f s from %d %s: %.1f requests/s, latency "
      "p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms; %zu failed\n",
      latencies_ms.size(), wall, clients,
      rate > 0 ? "keep-alive connections, open loop" : "clients, closed loop",
      latencies_ms.size() / wall, pct(0.5), pct(0.9), pct(0.99),
      latencies_ms.empty() ? 0.0 : latencies_ms.back(), errors.load());
  if (!first_error.empty()) std::printf("first failure: %s\n", first_error.c_str());
  return errors.load() == 0 ? 0 : 1;
}
