#include "server/http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

namespace nearlabel {

namespace {

using Clock = std::chrono::steady_clock;

// Latency buckets of the /metrics histogram, in seconds.
constexpr double kBuckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
constexpr size_t kBucketCount = sizeof kBuckets / sizeof kBuckets[0];

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// A fixed pool of handler threads with a bounded queue.
class WorkerPool {
 public:
  explicit WorkerPool(int n) {
    for (int i = 0; i < std::max(1, n); ++i) threads_.emplace_back([this] { Loop(); });
  }
  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  // Queues `job` unless `limit` jobs are waiting already.
  bool Submit(std::function<void()> job, size_t limit) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (jobs_.size() >= limit) return false;
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
    return true;
  }
  size_t queued() const {
    std::lock_guard<std::mutex> lock(mu_);
    return jobs_.size();
  }
  size_t busy() const { return busy_.load(); }
  // Waits until no job is queued or running.
  void Drain() {
    std::unique_lock<std::mutex> lock(mu_);
    idle_cv_.wait(lock, [&] { return jobs_.empty() && busy_.load() == 0; });
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return quit_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // quit_
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      ++busy_;
      lock.unlock();
      job();
      lock.lock();
      --busy_;
      if (jobs_.empty() && busy_.load() == 0) idle_cv_.notify_all();
    }
  }
  mutable std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::deque<std::function<void()>> jobs_;
  std::atomic<size_t> busy_{0};
  bool quit_ = false;
  std::vector<std::thread> threads_;
};

// One request's state, from its first header to the completion callback.
struct RequestState {
  HttpRequest req;
  std::string route;
  Clock::time_point start = Clock::now();
  size_t body_bytes = 0;
  size_t max_body = 0;  // this route's limit (HttpHandlers::max_body)
  MHD_PostProcessor* form_parser = nullptr;
  bool bad_form = false;
  bool too_large = false;  // the body passed the limit: dropped as it arrives
  std::multimap<std::string, HttpFormField>::iterator last_field;
  bool dispatched = false;
  bool responded = false;
  int status = 0;
  std::mutex mu;  // guards res between the worker and the event thread
  HttpResponse res;
  ~RequestState() {
    if (form_parser) MHD_destroy_post_processor(form_parser);
  }
};

}  // namespace

struct HttpServer::Impl {
  HttpServerOptions opt;
  HttpHandlers h;
  int listen_fd = -1;
  MHD_Daemon* daemon = nullptr;
  std::mutex daemon_mu;  // guards starting the daemon
  WorkerPool pool;
  std::mutex run_mu;
  std::condition_variable run_cv;
  bool stopping = false;

  // ---- HandleRaw: requests alive per socket it added ----
  std::mutex raw_mu;
  std::map<int, int> raw_requests;  // server-side fd -> complete requests not yet answered
  void TrackRaw(int fd, bool on) {
    std::lock_guard<std::mutex> lock(raw_mu);
    if (on) {
      raw_requests[fd] = 0;
    } else {
      raw_requests.erase(fd);
    }
  }
  bool RawBusy(int fd) {
    std::lock_guard<std::mutex> lock(raw_mu);
    auto it = raw_requests.find(fd);
    return it != raw_requests.end() && it->second > 0;
  }
  void CountRaw(MHD_Connection* c, int delta) {
    const MHD_ConnectionInfo* info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!info) return;
    std::lock_guard<std::mutex> lock(raw_mu);
    auto it = raw_requests.find(info->connect_fd);
    if (it != raw_requests.end()) it->second += delta;
  }

  // ---- metrics ----
  mutable std::mutex metrics_mu;
  std::map<std::pair<std::string, int>, uint64_t> requests;  // (route, status) -> count
  uint64_t bucket_counts[kBucketCount + 1] = {};
  double latency_sum = 0;
  uint64_t latency_count = 0;
  std::atomic<int64_t> connections{0};

  Impl(HttpServerOptions o, HttpHandlers hh) : opt(o), h(std::move(hh)), pool(o.workers) {}

  Status Start(bool listening) {
    std::lock_guard<std::mutex> lock(daemon_mu);
    if (daemon) return Status::OK();
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME;
    if (!listening) flags |= MHD_USE_NO_LISTEN_SOCKET;
    std::vector<MHD_OptionItem> o = {
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, static_cast<intptr_t>(opt.connection_buffer_bytes),
         nullptr},
        {MHD_OPTION_CONNECTION_LIMIT, static_cast<intptr_t>(opt.max_connections), nullptr},
        {MHD_OPTION_CONNECTION_TIMEOUT, static_cast<intptr_t>(opt.connection_timeout_s), nullptr},
        {MHD_OPTION_NOTIFY_COMPLETED, reinterpret_cast<intptr_t>(&Completed), this},
        {MHD_OPTION_NOTIFY_CONNECTION, reinterpret_cast<intptr_t>(&ConnectionEvent), this}};
    if (listening) o.push_back({MHD_OPTION_LISTEN_SOCKET, listen_fd, nullptr});
    o.push_back({MHD_OPTION_END, 0, nullptr});
    daemon = MHD_start_daemon(flags, 0, nullptr, nullptr, &Access, this, MHD_OPTION_ARRAY, o.data(),
                              MHD_OPTION_END);
    if (!daemon) return Status::IOError("cannot start the HTTP server (libmicrohttpd)");
    return Status::OK();
  }

  // ---- libmicrohttpd callbacks (on the event thread) ----
  static MHD_Result Access(void* cls, MHD_Connection* c, const char* url, const char* method,
                           const char*, const char* data, size_t* size, void** con_cls) {
    Impl* s = static_cast<Impl*>(cls);
    auto* st = static_cast<RequestState*>(*con_cls);
    if (!st) {
      st = new RequestState();
      *con_cls = st;
      return s->Begin(c, st, url, method);
    }
    if (st->responded) {  // an early answer (413) is on its way: the rest is dropped
      *size = 0;
      return MHD_YES;
    }
    if (*size > 0) {
      const size_t n = *size;
      *size = 0;
      st->body_bytes += n;
      if (st->body_bytes > st->max_body) {
        // libmicrohttpd takes an answer only before the body or after it: a body without a
        // Content-Length (chunked) that passes the limit is read on and dropped, so the client
        // gets its 413, up to twice the limit; past that the connection is closed.
        if (!st->too_large) {
          st->too_large = true;
          st->req.body.clear();
          st->req.body.shrink_to_fit();
          st->req.form.clear();
        }
        return st->body_bytes > 2 * st->max_body ? MHD_NO : MHD_YES;
      }
      if (st->form_parser) {
        if (MHD_post_process(st->form_parser, data, n) != MHD_YES) st->bad_form = true;
      } else {
        st->req.body.append(data, n);
      }
      return MHD_YES;
    }
    if (st->too_large) return s->TooLarge(c, st);
    if (!st->dispatched) return s->Dispatch(c, st);
    std::lock_guard<std::mutex> lock(st->mu);
    return s->Respond(c, st, st->res);  // resumed: the worker is done
  }

  MHD_Result Begin(MHD_Connection* c, RequestState* st, const char* url, const char* method) {
    HttpRequest& r = st->req;
    r.method = method;
    r.path = url;
    MHD_get_connection_values_n(c, MHD_HEADER_KIND, &HeaderValue, st);
    MHD_get_connection_values_n(c, MHD_GET_ARGUMENT_KIND, &QueryValue, st);
    st->route = h.route_name(r.method, r.path);
    st->max_body = h.max_body ? h.max_body(r.method, r.path) : opt.max_body_bytes;
    const std::string length = r.Header("content-length");
    if (!length.empty()) {
      errno = 0;
      char* end = nullptr;
      const unsigned long long n = std::strtoull(length.c_str(), &end, 10);
      if (errno == 0 && end && *end == '\0' && n > st->max_body) return TooLarge(c, st);
    }
    const std::string type = Lower(r.Header("content-type"));
    if (type.rfind("multipart/form-data", 0) == 0) {
      r.multipart = true;
      st->form_parser = MHD_create_post_processor(c, 64 * 1024, &FormValue, st);
      if (!st->form_parser) {
        return Respond(c, st, h.error(400, "multipart/form-data without a usable boundary"));
      }
    }
    return MHD_YES;
  }

  MHD_Result TooLarge(MHD_Connection* c, RequestState* st) {
    const std::string what =
        st->too_large ? "the request body passed " : "the request body declares more than ";
    return Respond(c, st,
                   h.error(413, what + std::to_string(st->max_body) +
                                    " bytes, the server's limit for this route (--max-upload-mb; "
                                    "/v1/classify/batch: max_batch_bytes in /v1/stats); nothing "
                                    "past the limit was kept"));
  }

  MHD_Result Dispatch(MHD_Connection* c, RequestState* st) {
    st->dispatched = true;
    CountRaw(c, +1);
    if (st->bad_form) return Respond(c, st, h.error(400, "malformed multipart/form-data body"));
    if (h.cheap(st->req.method, st->req.path)) {
      HttpResponse res;
      h.handle(st->req, res);
      return Respond(c, st, res);
    }
    MHD_suspend_connection(c);
    const bool queued = pool.Submit(
        [this, c, st] {
          HttpResponse res;
          h.handle(st->req, res);
          {
            std::lock_guard<std::mutex> lock(st->mu);
            st->res = std::move(res);
          }
          MHD_resume_connection(c);
        },
        opt.max_queued);
    if (!queued) {
      MHD_resume_connection(c);
      std::lock_guard<std::mutex> lock(st->mu);
      st->res = h.error(503, "the server is busy (" + std::to_string(opt.max_queued) +
                                 " requests waiting); retry shortly");
    }
    return MHD_YES;
  }

  MHD_Result Respond(MHD_Connection* c, RequestState* st, const HttpResponse& res) {
    MHD_Response* r = MHD_create_response_from_buffer(
        res.body.size(), const_cast<char*>(res.body.data()), MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, res.content_type.c_str());
    for (const auto& [k, v] : res.headers) MHD_add_response_header(r, k.c_str(), v.c_str());
    const MHD_Result ok = MHD_queue_response(c, static_cast<unsigned>(res.status), r);
    MHD_destroy_response(r);
    if (ok == MHD_YES) {
      st->responded = true;
      st->status = res.status;
    }
    return ok;
  }

  static MHD_Result HeaderValue(void* cls, MHD_ValueKind, const char* key, size_t key_size,
                                const char* value, size_t value_size) {
    auto* st = static_cast<RequestState*>(cls);
    st->req.headers[Lower(std::string(key, key_size))] =
        value ? std::string(value, value_size) : std::string();
    return MHD_YES;
  }

  static MHD_Result QueryValue(void* cls, MHD_ValueKind, const char* key, size_t key_size,
                               const char* value, size_t value_size) {
    auto* st = static_cast<RequestState*>(cls);
    st->req.query[std::string(key, key_size)] =
        value ? std::string(value, value_size) : std::string();
    return MHD_YES;
  }

  // Multipart fields arrive in pieces (off counts the bytes of the field so far).
  static MHD_Result FormValue(void* cls, MHD_ValueKind, const char* key, const char* filename,
                              const char* content_type, const char*, const char* data, uint64_t off,
                              size_t size) {
    auto* st = static_cast<RequestState*>(cls);
    if (off == 0 || st->req.form.empty()) {  // libmicrohttpd starts each field at offset 0
      HttpFormField f;
      f.filename = filename ? filename : "";
      f.content_type = content_type ? content_type : "";
      st->last_field = st->req.form.emplace(key ? key : "", std::move(f));
    }
    st->last_field->second.content.append(data, size);
    return MHD_YES;
  }

  static void Completed(void* cls, MHD_Connection* c, void** con_cls, MHD_RequestTerminationCode) {
    Impl* s = static_cast<Impl*>(cls);
    auto* st = static_cast<RequestState*>(*con_cls);
    if (!st) return;
    *con_cls = nullptr;
    if (st->dispatched) s->CountRaw(c, -1);
    s->Record(st->route, st->responded ? st->status : 0,
              std::chrono::duration<double>(Clock::now() - st->start).count());
    delete st;
  }

  static void ConnectionEvent(void* cls, MHD_Connection*, void**,
                              MHD_ConnectionNotificationCode code) {
    Impl* s = static_cast<Impl*>(cls);
    s->connections += code == MHD_CONNECTION_NOTIFY_STARTED ? 1 : -1;
  }

  void Record(const std::string& route, int status, double seconds) {
    std::lock_guard<std::mutex> lock(metrics_mu);
    ++requests[{route, status}];
    size_t b = 0;
    while (b < kBucketCount && seconds > kBuckets[b]) ++b;
    ++bucket_counts[b];
    latency_sum += seconds;
    ++latency_count;
  }
};

HttpServer::HttpServer(HttpServerOptions options, HttpHandlers handlers)
    : impl_(std::make_unique<Impl>(options, std::move(handlers))) {}

HttpServer::~HttpServer() {
  impl_->pool.Drain();
  if (impl_->daemon) MHD_stop_daemon(impl_->daemon);
  if (impl_->listen_fd >= 0) ::close(impl_->listen_fd);
}

Status HttpServer::Bind(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (::getaddrinfo(host.c_str(), service.c_str(), &hints, &found) != 0 || !found) {
    return Status::IOError("cannot listen on " + host + ": not an address of this machine");
  }
  int fd = -1;
  std::string why = "no usable address";
  for (addrinfo* a = found; a && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, 128) != 0) {
      why = std::strerror(errno);
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(found);
  if (fd < 0) {
    return Status::IOError("cannot listen on " + host + ":" + service + " (" + why +
                           "; in use, or not an address of this machine)");
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  impl_->listen_fd = fd;
  return Status::OK();
}

Status HttpServer::Run() {
  if (impl_->listen_fd < 0) return Status::InvalidArgument("Run before Bind");
  NL_RETURN_IF_ERROR(impl_->Start(true));
  std::unique_lock<std::mutex> lock(impl_->run_mu);
  impl_->run_cv.wait(lock, [&] { return impl_->stopping; });
  lock.unlock();
  // No new connections; requests in the workers finish and their answers go out (a
  // suspended connection must be resumed before the daemon may stop).
  MHD_quiesce_daemon(impl_->daemon);
  impl_->pool.Drain();
  for (int i = 0; i < 100 && impl_->connections.load() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return Status::OK();
}

void HttpServer::Stop() {
  {
    std::lock_guard<std::mutex> lock(impl_->run_mu);
    impl_->stopping = true;
  }
  impl_->run_cv.notify_all();
}

std::string HttpServer::HandleRaw(const std::string& request) {
  if (!impl_->Start(false).ok()) return "";  // no-op once a daemon runs
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return "";
  sockaddr_in peer{};
  peer.sin_family = AF_INET;
  peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const int server_fd = fds[0], fd = fds[1];
  impl_->TrackRaw(server_fd, true);
  if (MHD_add_connection(impl_->daemon, server_fd, reinterpret_cast<sockaddr*>(&peer),
                         sizeof peer) != MHD_YES) {
    impl_->TrackRaw(server_fd, false);
    ::close(fds[0]);
    ::close(fds[1]);
    return "";
  }
  ::fcntl(fd, F_SETFL, O_NONBLOCK);
  // The client end is never half-closed (libmicrohttpd drops a connection whose client shut
  // its sending side, answer and all). Done when the server closes, or when it has read every
  // byte and holds no request for 10 ms: answered, or waiting for input that never comes
  // (libmicrohttpd parses what it reads in the same turn of its loop).
  std::string out;
  size_t sent = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(impl_->opt.connection_timeout_s + 5);
  bool idle = false;
  Clock::time_point idle_since = Clock::now();
  char buf[65536];
  while (Clock::now() < deadline) {
    pollfd p{fd, static_cast<short>(POLLIN | (sent < request.size() ? POLLOUT : 0)), 0};
    if (::poll(&p, 1, 1) < 0) break;
    if (sent < request.size() && (p.revents & POLLOUT)) {
      const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
      if (n > 0) sent += static_cast<size_t>(n);
      if (n < 0 && errno != EAGAIN) sent = request.size();  // the server closed: stop sending
    }
    if (p.revents & (POLLIN | POLLHUP)) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n == 0 || (n < 0 && errno != EAGAIN)) break;
      if (n > 0) out.append(buf, static_cast<size_t>(n));
      idle = false;
      continue;
    }
    if (sent < request.size()) continue;
    int unread = 0;
    ::ioctl(server_fd, FIONREAD, &unread);
    if (unread > 0 || impl_->RawBusy(server_fd)) {
      idle = false;
    } else if (!idle) {
      idle = true;
      idle_since = Clock::now();
    } else if (Clock::now() - idle_since > std::chrono::milliseconds(10)) {
      break;
    }
  }
  ::close(fd);  // the daemon sees the close and drops its end
  impl_->TrackRaw(server_fd, false);
  return out;
}

std::string HttpServer::MetricsText() const {
  const Impl& s = *impl_;
  std::string out;
  out +=
      "# HELP nearlabel_http_requests_total Requests answered, by route and status (0: cut off).\n";
  out += "# TYPE nearlabel_http_requests_total counter\n";
  std::lock_guard<std::mutex> lock(s.metrics_mu);
  for (const auto& [key, n] : s.requests) {
    out += "nearlabel_http_requests_total{route=\"" + key.first + "\",status=\"" +
           std::to_string(key.second) + "\"} " + std::to_string(n) + "\n";
  }
  out +=
      "# HELP nearlabel_http_request_duration_seconds From the request's first byte to its "
      "answer.\n";
  out += "# TYPE nearlabel_http_request_duration_seconds histogram\n";
  uint64_t cumulative = 0;
  char buf[64];
  for (size_t b = 0; b <= kBucketCount; ++b) {
    cumulative += s.bucket_counts[b];
    if (b < kBucketCount) {
      std::snprintf(buf, sizeof buf, "%g", kBuckets[b]);
    } else {
      std::snprintf(buf, sizeof buf, "+Inf");
    }
    out += std::string("nearlabel_http_request_duration_seconds_bucket{le=\"") + buf + "\"} " +
           std::to_string(cumulative) + "\n";
  }
  std::snprintf(buf, sizeof buf, "%.6f", s.latency_sum);
  out += std::string("nearlabel_http_request_duration_seconds_sum ") + buf + "\n";
  out += "nearlabel_http_request_duration_seconds_count " + std::to_string(s.latency_count) + "\n";
  out += "# HELP nearlabel_http_requests_in_flight Requests a worker is handling now.\n";
  out += "# TYPE nearlabel_http_requests_in_flight gauge\n";
  out += "nearlabel_http_requests_in_flight " + std::to_string(s.pool.busy()) + "\n";
  out += "# HELP nearlabel_http_requests_queued Complete requests waiting for a worker.\n";
  out += "# TYPE nearlabel_http_requests_queued gauge\n";
  out += "nearlabel_http_requests_queued " + std::to_string(s.pool.queued()) + "\n";
  out += "# HELP nearlabel_http_connections Open client connections.\n";
  out += "# TYPE nearlabel_http_connections gauge\n";
  out += "nearlabel_http_connections " + std::to_string(s.connections.load()) + "\n";
  out += "# HELP nearlabel_http_workers Handler threads (--threads).\n";
  out += "# TYPE nearlabel_http_workers gauge\n";
  out += "nearlabel_http_workers " + std::to_string(std::max(1, s.opt.workers)) + "\n";
  if (s.h.extra_metrics) out += s.h.extra_metrics();
  return out;
}

}  // namespace nearlabel
