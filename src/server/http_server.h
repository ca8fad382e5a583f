// The HTTP layer of `nearlabel serve`: Debian's libmicrohttpd (GNU) in its event-driven mode,
// with nearlabel's handlers on a worker pool.
//
// Why not cpp-httplib any more (bench/serve_load.sh measures both designs' failure modes):
// httplib 0.11 gives every connection a thread of its fixed pool until 5 s of silence, so 20
// slow sockets starved 8 threads and a 64-connection keep-alive pool queued behind them; and
// it buffers chunked bodies, request lines and headers without limit. Here one epoll thread
// owns every socket (an idle or slow connection costs a few KiB, not a thread), the request
// line and headers must fit in a 64 KiB per-connection buffer (else MHD answers 431/414), the
// body is counted as it arrives, chunked or not, and refused with 413 the moment it passes
// the limit, and only a complete request reaches a worker thread: a handler never waits for
// a client. Cheap routes (healthz, metrics) are answered on the event thread, so they answer
// even while every worker is busy.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nearlabel/status.h"

namespace nearlabel {

struct HttpFormField {
  std::string filename;  // "" for a plain (non-file) field
  std::string content_type;
  std::string content;
};

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // without the query string, not percent-decoded
  // Query parameters, percent-decoded ('+' is a space); a repeated name keeps the last value.
  // Values may hold any byte (a %00 stays a NUL), so handlers check what they need.
  std::map<std::string, std::string> query;
  std::map<std::string, std::string> headers;  // names lowercased
  bool multipart = false;                      // multipart/form-data: fields in `form`
  std::multimap<std::string, HttpFormField> form;
  std::string body;  // the raw body when not multipart
  std::string Header(const std::string& lowercase_name) const {
    auto it = headers.find(lowercase_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

struct HttpServerOptions {
  size_t max_body_bytes = 20u << 20;   // a body past this is refused with 413 as it arrives
  int workers = 8;                     // handler threads
  size_t max_queued = 1024;            // complete requests waiting for a worker; past it 503
  unsigned connection_timeout_s = 30;  // a connection silent this long is closed
  unsigned max_connections = 2000;
  size_t connection_buffer_bytes = 64u << 10;  // request line + headers must fit
};

// What the server hands its owner: the handler, which routes are cheap, route names for the
// metrics, and the body of the 413 / 503 / parse errors the layer sends itself.
struct HttpHandlers {
  // Runs on a worker thread (or the event thread when cheap() says so); fills `res`.
  // Must not throw.
  std::function<void(const HttpRequest&, HttpResponse&)> handle;
  // True for routes answered on the event thread (fast, no I/O, no model).
  std::function<bool(const std::string& method, const std::string& path)> cheap;
  // A bounded route label for metrics ("/v1/items/{id}"), never a raw path.
  std::function<std::string(const std::string& method, const std::string& path)> route_name;
  // The body limit of a route (may be empty: HttpServerOptions::max_body_bytes for all).
  std::function<size_t(const std::string& method, const std::string& path)> max_body;
  // An error response in the owner's format.
  std::function<HttpResponse(int status, const std::string& message)> error;
  // Extra Prometheus text appended to /metrics (gauges of the owner: rows, index).
  std::function<std::string()> extra_metrics;
};

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, HttpHandlers handlers);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds host:port (port 0: any free port). After it, port() is the bound port.
  Status Bind(const std::string& host, int port);
  int port() const { return port_; }
  // Serves the bound socket until Stop() (from any thread); returns once every accepted
  // request has been answered or cut off.
  Status Run();
  void Stop();

  // Sends `request` (raw bytes) over a socket pair into the same daemon, parser, routes and
  // handlers as Run, and returns the raw response ("" when the request was incomplete and
  // the server closed the connection). For fuzzing and tests; starts a daemon without a
  // listening socket when Run has not. Thread-safe.
  std::string HandleRaw(const std::string& request);

  // The Prometheus text of /metrics (request counters, latency histogram, in-flight,
  // queued, connections, plus HttpHandlers::extra_metrics). Thread-safe.
  std::string MetricsText() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace nearlabel
