#include "server/http_server.h"

#include <chrono>

#include <gtest/gtest.h>

namespace nearlabel {
namespace {

HttpHandlers EchoHandlers() {
  HttpHandlers h;
  h.handle = [](const HttpRequest& req, HttpResponse& res) {
    res.content_type = "text/plain";
    res.body = req.method + " " + req.path + " body=" + std::to_string(req.body.size());
    for (const auto& [k, v] : req.query) res.body += " " + k + "=" + std::to_string(v.size());
    for (const auto& [k, f] : req.form) res.body += " form:" + k + "=" + f.content;
  };
  h.cheap = [](const std::string&, const std::string& path) { return path == "/cheap"; };
  h.route_name = [](const std::string& m, const std::string&) { return m + " route"; };
  h.error = [](int status, const std::string& message) {
    HttpResponse r;
    r.status = status;
    r.body = message;
    return r;
  };
  return h;
}

TEST(HttpServerTest, RawRequestsGoThroughTheParserAndTheWorkers) {
  HttpServerOptions o;
  o.max_body_bytes = 1000;
  HttpServer s(o, EchoHandlers());
  std::string r = s.HandleRaw("GET /x?a=1%002&b=%41 HTTP/1.1\r\nHost: h\r\n\r\n");
  EXPECT_EQ(r.compare(0, 15, "HTTP/1.1 200 OK"), 0) << r;
  EXPECT_NE(r.find("GET /x body=0 a=3 b=1"), std::string::npos) << r;  // %00 kept as a byte
  r = s.HandleRaw("GET /cheap HTTP/1.1\r\nHost: h\r\n\r\n");
  EXPECT_NE(r.find("GET /cheap"), std::string::npos) << r;
  const std::string form =
      "--XyZ\r\nContent-Disposition: form-data; name=\"label\"\r\n\r\nok\r\n--XyZ--\r\n";
  r = s.HandleRaw(
      "POST /f HTTP/1.1\r\nHost: h\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n"
      "Content-Length: " +
      std::to_string(form.size()) + "\r\n\r\n" + form);
  EXPECT_NE(r.find("form:label=ok"), std::string::npos) << r;
  EXPECT_NE(
      s.MetricsText().find("nearlabel_http_requests_total{route=\"POST route\",status=\"200\"} 1"),
      std::string::npos);
}

TEST(HttpServerTest, BodiesPastTheLimitAre413WhetherDeclaredOrChunked) {
  HttpServerOptions o;
  o.max_body_bytes = 1000;
  HttpServer s(o, EchoHandlers());
  std::string r = s.HandleRaw("POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n");
  EXPECT_EQ(r.compare(0, 12, "HTTP/1.1 413"), 0) << r;
  std::string chunked = "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 3; ++i) chunked += "1f4\r\n" + std::string(500, 'z') + "\r\n";
  chunked += "0\r\n\r\n";
  r = s.HandleRaw(chunked);
  EXPECT_EQ(r.compare(0, 12, "HTTP/1.1 413"), 0) << r;
  EXPECT_NE(r.find("passed 1000 bytes"), std::string::npos) << r;
  r = s.HandleRaw("GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + std::string(100000, 'y') + "\r\n\r\n");
  EXPECT_EQ(r.compare(0, 12, "HTTP/1.1 431"), 0) << r.substr(0, 40);
}

TEST(HttpServerTest, AnIncompleteRequestEndsAtOnce) {
  HttpServer s(HttpServerOptions{}, EchoHandlers());
  const auto t0 = std::chrono::steady_clock::now();
  const std::string r = s.HandleRaw("POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 50\r\n\r\nab");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.find("HTTP/1.1 200"), std::string::npos) << r;
  EXPECT_LT(secs, 5.0);  // the client's end of input closes it, not the 30 s idle timeout
}

}  // namespace
}  // namespace nearlabel
