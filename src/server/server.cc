// The HTTP API: routes, parameter checking and JSON over the HTTP layer (http_server.h,
// libmicrohttpd). Queries go to the Collection (collection.h), the same engine and planner as
// the CLI. Threading: the layer's worker pool runs requests concurrently; searches share the
// collection's read lock, the model runs one image at a time (embed_mu), the server's store
// connection (writes, browsing, thumbnails, rejection thresholds) is used by one request at a
// time (store_mu), the anomaly model's patch embedder runs one image at a time (anomaly_mu).
// One sync thread follows the store's change feed (PostgreSQL's notifications, a SQLite file's
// change log) and applies every writer's rows, this server's included, to the collection.
#include "nearlabel/server.h"
#include "common/json.h"

#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>
#include <variant>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "collection/answer_json.h"
#include "common/data_uri.h"
#include "common/sha256.h"
#include "nearlabel/classify.h"
#include "nearlabel/collection.h"
#include "nearlabel/dataset.h"
#include "nearlabel/image.h"
#include "server/http_server.h"

namespace nearlabel {

extern const char kWebPage[];  // web_page.cc

namespace {

using json = nlohmann::json;

constexpr int kMaxK = 1000;

// An HTTP error with its status code (thrown inside handlers, turned into JSON by one place).
struct HttpError {
  int status;
  std::string message;
};

void SendJson(HttpResponse& res, int status, const json& body) {
  res.status = status;
  res.content_type = "application/json";
  res.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
}

HttpResponse ErrorResponse(int status, const std::string& message) {
  HttpResponse res;
  SendJson(res, status, {{"error", {{"status", status}, {"message", message}}}});
  return res;
}

// Request parameters from the URL's query string and, for multipart bodies, the non-file
// fields. (A raw image sent with curl --data-binary arrives as
// application/x-www-form-urlencoded: the body is the image, never parameters.)
std::map<std::string, std::string> Params(const HttpRequest& req) {
  std::map<std::string, std::string> p = req.query;
  for (const auto& [k, f] : req.form) {
    if (f.filename.empty()) p[k] = f.content;
  }
  return p;
}

void RejectUnknown(const std::map<std::string, std::string>& params,
                   const std::set<std::string>& known) {
  for (const auto& [k, v] : params) {
    if (known.count(k)) continue;
    std::string list;
    for (const auto& n : known) list += (list.empty() ? "" : ", ") + n;
    const std::string name = IsJsonText(k) ? k : "?";
    throw HttpError{400, "unknown field '" + name + "' (this route takes: " + list + ")"};
  }
}

int IntParam(const std::map<std::string, std::string>& p, const std::string& name, int fallback,
             int lo, int hi) {
  auto it = p.find(name);
  if (it == p.end() || it->second.empty()) return fallback;
  size_t used = 0;
  long v = 0;
  try {
    v = std::stol(it->second, &used);
  } catch (...) {
    used = 0;
  }
  if (used != it->second.size() || v < lo || v > hi) {
    throw HttpError{
        400, name + " must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi)};
  }
  return static_cast<int>(v);
}

std::string Param(const std::map<std::string, std::string>& p, const std::string& name) {
  auto it = p.find(name);
  return it == p.end() ? std::string() : it->second;
}

// A text parameter that will be stored or compared as JSON text: UTF-8 without NUL bytes.
std::string TextParam(const std::map<std::string, std::string>& p, const std::string& name) {
  std::string v = Param(p, name);
  if (!IsJsonText(v)) {
    throw HttpError{400, name + " must be UTF-8 text without NUL bytes"};
  }
  return v;
}

// The uploaded image: the multipart file field "image" (or the only file), else the raw body.
std::pair<std::string, std::string> ImageOf(const HttpRequest& req) {
  if (req.multipart) {
    auto it = req.form.find("image");
    if (it == req.form.end()) {
      for (auto f = req.form.begin(); f != req.form.end(); ++f) {
        if (!f->second.filename.empty()) {
          if (it != req.form.end()) throw HttpError{400, "send one image (field 'image')"};
          it = f;
        }
      }
    }
    if (it == req.form.end()) throw HttpError{400, "no image: send it in the field 'image'"};
    return {it->second.content, it->second.filename};
  }
  if (req.body.empty()) {
    throw HttpError{400, "no image: send it as the request body or a multipart field 'image'"};
  }
  return {req.body, ""};
}

std::string ThumbnailUrl(int64_t id) { return "/v1/items/" + std::to_string(id) + "/thumbnail"; }

bool SameToken(const std::string& a, const std::string& b) {
  // Constant time in the token's length: no early exit on the first differing byte.
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

// "/v1/items/17" -> "17", "/v1/items/17/thumbnail" -> "17" (with `suffix`); nullopt when the
// path is not of that shape.
std::optional<std::string> ItemIdPart(const std::string& path, const std::string& suffix) {
  const std::string prefix = "/v1/items/";
  if (path.compare(0, prefix.size(), prefix) != 0 || path.size() <= prefix.size() + suffix.size())
    return std::nullopt;
  if (path.compare(path.size() - suffix.size(), suffix.size(), suffix) != 0) return std::nullopt;
  std::string id = path.substr(prefix.size(), path.size() - prefix.size() - suffix.size());
  if (id.empty() || id.find('/') != std::string::npos) return std::nullopt;
  return id;
}

// The route label for metrics: a fixed set, never a raw path.
std::string RouteName(const std::string& method, const std::string& path) {
  static const std::set<std::string> fixed = {"/",           "/healthz",     "/metrics",
                                              "/v1/stats",   "/v1/classify", "/v1/search",
                                              "/v1/anomaly", "/v1/items",    "/v1/classify/batch"};
  if (fixed.count(path)) return method + " " + path;
  if (ItemIdPart(path, "/thumbnail")) return method + " /v1/items/{id}/thumbnail";
  if (ItemIdPart(path, "")) return method + " /v1/items/{id}";
  return "other";
}

}  // namespace

struct Server::Impl {
  ServerOptions opt;
  std::unique_ptr<Store> store;
  std::mutex store_mu;
  std::unique_ptr<Embedder> embedder;
  std::mutex embed_mu;
  std::unique_ptr<Collection> collection;
  ServerAnomaly anomaly;
  std::mutex anomaly_mu;
  CollectionInfo info;
  std::string label_field;
  std::string notice;
  std::string source_root;  // the directory every stored source shares (see Source)
  std::unique_ptr<HttpServer> http;
  int port = 0;

  // ---- Following the change feed ----
  bool shared = false;   // PostgreSQL (for messages)
  bool follows = false;  // the store has a change feed (PostgreSQL, SQLite format 3)
  std::thread sync_thread;
  std::mutex sync_mu;  // guards stopping (with sync_cv)
  std::condition_variable sync_cv;
  bool stopping = false;
  std::atomic<bool> feed_connected{true};
  std::atomic<int64_t> reconnects{0};
  // /v1/stats' label counts: one GROUP BY over the table, redone when a change arrived.
  std::mutex labels_mu;
  int64_t labels_change = -1;
  json labels_cache;

  ~Impl() { StopSync(); }

  void StopSync() {
    {
      std::lock_guard<std::mutex> lock(sync_mu);
      stopping = true;
    }
    sync_cv.notify_all();
    if (sync_thread.joinable()) sync_thread.join();
  }

  // Applies every change not applied yet. False when the connection failed.
  bool CatchUp() {
    auto applied = collection->Refresh();
    if (!applied.ok()) {
      std::fprintf(stderr, "nearlabel: serve: catching up: %s\n",
                   applied.status().message().c_str());
    }
    return applied.ok();
  }

  // The sync thread: wakes on a notification (or every 500 ms, in case one was missed), then
  // catches up by change id. A lost connection is retried with a growing pause while the
  // server keeps answering reads from the rows it has; on reconnecting it catches up.
  void SyncLoop() {
    int pause_ms = 100;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(sync_mu);
        if (stopping) return;
      }
      auto woke = collection->WaitForChanges(500);
      const bool ok = woke.ok() && CatchUp();
      if (ok) {
        if (!feed_connected.exchange(true)) {
          ++reconnects;
          std::fprintf(stderr,
                       "nearlabel: serve: database connection back; caught up to change %lld\n",
                       static_cast<long long>(collection->state().change_id));
        }
        pause_ms = 100;
        continue;
      }
      if (feed_connected.exchange(false)) {
        std::fprintf(stderr,
                     "nearlabel: serve: lost the database connection (%s); serving the rows "
                     "synced so far, retrying\n",
                     woke.ok() ? "reading changes" : woke.status().message().c_str());
      }
      std::unique_lock<std::mutex> lock(sync_mu);
      sync_cv.wait_for(lock, std::chrono::milliseconds(pause_ms), [&] { return stopping; });
      pause_ms = std::min(2000, pause_ms * 2);
    }
  }

  // A store failure as an HTTP error: a database that cannot be reached is 503 (retry later).
  // The detail (which names the store's file or database) goes to the server's log only.
  HttpError StoreError(const Status& st) const {
    std::fprintf(stderr, "nearlabel: serve: store: %s\n", st.message().c_str());
    if (st.code() == Status::Code::kIOError) {
      return HttpError{503, std::string(shared ? "the PostgreSQL store" : "the store") +
                                " cannot be reached now (searches go on from the rows this "
                                "server holds); retry shortly"};
    }
    return HttpError{500, "the store failed (the server's log has the details)"};
  }

  // An uploaded image, decoded (concurrently with other requests), within the limits.
  cv::Mat Decode(const std::string& bytes) {
    if (bytes.size() > opt.max_upload_bytes) {
      throw HttpError{413, "image of " + std::to_string(bytes.size()) + " bytes; the limit is " +
                               std::to_string(opt.max_upload_bytes)};
    }
    auto img = DecodeImage(bytes, opt.max_pixels);
    if (!img.ok()) {
      const bool too_large = img.status().code() == Status::Code::kInvalidArgument;
      throw HttpError{too_large ? 413 : 400, img.status().message()};
    }
    return std::move(*img);
  }

  // Preprocesses `img` (concurrently) for `model` and runs it under `mu` (one image at a time).
  static std::vector<float> RunModel(const cv::Mat& img, Embedder& model, std::mutex& mu) {
    const PreprocessSpec& spec = model.card().preprocess;
    std::vector<float> tensor(static_cast<size_t>(3) * spec.width * spec.height);
    PreprocessInto(img, spec, tensor.data());
    std::vector<float> out(model.floats_per_image());
    Status st;
    {
      std::lock_guard<std::mutex> lock(mu);
      st = model.Embed(tensor.data(), 1, out.data());
    }
    if (!st.ok()) throw HttpError{500, "embedding failed: " + st.message()};
    return out;
  }

  // Decodes and embeds an uploaded image.
  std::vector<float> Embed(const std::string& bytes, std::string* thumbnail) {
    const cv::Mat img = Decode(bytes);
    if (thumbnail) *thumbnail = EncodeThumbnail(img);
    return RunModel(img, *embedder, embed_mu);
  }

  // The anomaly model's summary for /v1/stats (null without one).
  json AnomalyInfo() const {
    if (!anomaly.model) return nullptr;
    const AnomalyModel& m = *anomaly.model;
    return {{"name", m.name},
            {"normal", m.normal_where},
            {"threshold", m.threshold},
            {"false_alarm_rate", m.false_alarm_rate},
            {"bank_patches", m.bank_rows()},
            {"bank_search", m.bank_index ? "hnsw" : "exact"},
            {"grid", m.projector.grid()}};
  }

  // POST /v1/anomaly: the image's anomaly score, verdict and heat map (a JPEG data: URI of the
  // overlay `anomaly score --heatmap` writes; heatmap=0 leaves it out).
  void ScoreAnomaly(const HttpRequest& req, HttpResponse& res) {
    const auto t0 = std::chrono::steady_clock::now();
    if (!anomaly.model) {
      throw HttpError{404,
                      "this server has no anomaly model: fit one with `nearlabel anomaly fit "
                      "STORE --normal CONDITION`, then start serve again"};
    }
    auto params = Params(req);
    params.erase("image");
    RejectUnknown(params, {"heatmap"});
    const bool want_heatmap = IntParam(params, "heatmap", 1, 0, 1) == 1;
    auto [bytes, filename] = ImageOf(req);
    const cv::Mat img = Decode(bytes);
    const std::vector<float> raw = RunModel(img, *anomaly.patch_embedder, anomaly_mu);
    const AnomalyModel& m = *anomaly.model;
    const AnomalyScore s = ScoreImage(m, raw.data());
    json body = {{"name", m.name},
                 {"score", s.score},
                 {"threshold", m.threshold},
                 {"false_alarm_rate", m.false_alarm_rate},
                 {"verdict", s.score > m.threshold ? "anomalous" : "normal"},
                 {"grid", m.projector.grid()},
                 {"patch_scores", s.patch_scores}};
    if (!filename.empty()) body["image"] = filename;
    if (want_heatmap) {
      const cv::Mat overlay =
          AnomalyHeatmap(img, anomaly.patch_embedder->card().preprocess, m, s.patch_scores);
      std::vector<uchar> jpeg;
      cv::imencode(".jpg", overlay, jpeg, {cv::IMWRITE_JPEG_QUALITY, 90});
      body["heatmap"] = DataUri(std::string(jpeg.begin(), jpeg.end()), "image/jpeg");
    }
    body["ms"] =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    SendJson(res, 200, body);
  }

  // The rows a query may return: `within` ("FIELD=VALUE") and `where` (an SQL expression
  // over items, read-only, as the CLI's --where), joined.
  static std::string WhereOf(const std::map<std::string, std::string>& params) {
    auto sql = RowFilterSql(Param(params, "within"), TextParam(params, "where"));
    if (!sql.ok()) throw HttpError{400, sql.status().message()};  // WithinToSql's rule and words
    return *sql;
  }

  // Open-set thresholds for reject=1 (calibrated on the rows the query may answer from, cached
  // in the store as the CLI's --reject).
  std::optional<RejectThresholds> Rejection(const std::map<std::string, std::string>& params,
                                            const std::string& where, const std::string& field) {
    if (IntParam(params, "reject", 0, 0, 1) == 0) return std::nullopt;
    double quantile = 0.97;
    if (const std::string q = Param(params, "reject_quantile"); !q.empty()) {
      char* end = nullptr;
      quantile = std::strtod(q.c_str(), &end);
      if (end != q.c_str() + q.size() || !(quantile > 0 && quantile <= 1)) {
        throw HttpError{400, "reject_quantile must be a number in (0, 1]"};
      }
    }
    std::string how;
    std::lock_guard<std::mutex> lock(store_mu);
    auto r = CachedRejection(*store, opt.store_location, where, field, quantile, &how);
    if (!r.ok()) {
      if (r.status().code() == Status::Code::kInvalidArgument) {
        throw HttpError{400, "reject: " + r.status().message()};
      }
      throw StoreError(r.status());
    }
    return std::move(*r);
  }

  // A classify or search request's parameters, checked once for every image it holds.
  struct QueryRequest {
    bool classify = true;
    QueryOptions q;
    Vote vote = Vote::kMajority;
    std::string field;
    std::optional<RejectThresholds> reject;
    std::optional<Calibration> calibration;
  };

  // The calibrated confidence for a classify request (confidence=vote: none), fitted and
  // cached like the rejection thresholds; none when the rows cannot be calibrated.
  std::optional<Calibration> CalibrationFor(const std::map<std::string, std::string>& params,
                                            const std::string& where, const std::string& field,
                                            int k, Vote vote) {
    const std::string mode = Param(params, "confidence");
    if (mode == "vote") return std::nullopt;
    if (!mode.empty() && mode != "calibrated") {
      throw HttpError{400, "confidence must be calibrated or vote"};
    }
    std::lock_guard<std::mutex> lock(store_mu);
    auto c = CachedCalibration(*store, opt.store_location, where, field, k, vote);
    if (!c.ok() && c.status().code() == Status::Code::kInvalidArgument) return std::nullopt;
    if (!c.ok()) throw StoreError(c.status());
    return *c;
  }

  QueryRequest ParseQuery(std::map<std::string, std::string> params, bool classify) {
    params.erase("image");
    if (classify) {
      RejectUnknown(params, {"k", "vote", "within", "where", "ef", "label", "exact", "reject",
                             "reject_quantile", "confidence"});
    } else {
      RejectUnknown(params, {"k", "within", "where", "ef", "label", "exact"});
    }
    QueryRequest r;
    r.classify = classify;
    r.q.k = IntParam(params, "k", classify ? 5 : 10, 1, kMaxK);
    r.q.ef = IntParam(params, "ef", 0, 1, 100000);
    r.q.exact = IntParam(params, "exact", 0, 0, 1) == 1;
    r.q.where_sql = WhereOf(params);
    if (classify && !Param(params, "vote").empty()) {
      auto v = ParseVote(Param(params, "vote"));
      if (!v.ok()) throw HttpError{400, v.status().message()};
      r.vote = *v;
    }
    r.field = Param(params, "label").empty() ? label_field : TextParam(params, "label");
    if (classify) {
      r.reject = Rejection(params, r.q.where_sql, r.field);
      r.calibration = CalibrationFor(params, r.q.where_sql, r.field, r.q.k, r.vote);
    }
    return r;
  }

  // The answer for one uploaded image (AnswerJson's shape, docs/api.md).
  json AnswerImage(const QueryRequest& r, const std::string& bytes) {
    std::vector<float> embedding = Embed(bytes, nullptr);
    auto c = collection->Classify(embedding.data(), r.q, r.field, r.vote,
                                  r.reject ? &*r.reject : nullptr,
                                  r.calibration ? &*r.calibration : nullptr);
    if (!c.ok()) {
      if (c.status().code() == Status::Code::kInvalidArgument) {
        throw HttpError{400, c.status().message()};  // a bad `where`
      }
      throw StoreError(c.status());
    }
    AnswerJsonOptions jo;
    jo.classify = r.classify;
    jo.label_field = r.field;
    jo.k = r.q.k;
    jo.vote = r.vote;
    jo.source = [this](const std::string& src) { return Source(src); };
    jo.decorate = [](int64_t id, json* nb) { (*nb)["thumbnail"] = ThumbnailUrl(id); };
    return AnswerJson(*c, jo);
  }

  void Query(const HttpRequest& req, HttpResponse& res, bool classify) {
    const auto t0 = std::chrono::steady_clock::now();
    const QueryRequest r = ParseQuery(Params(req), classify);
    auto [bytes, filename] = ImageOf(req);
    json body = AnswerImage(r, bytes);
    if (!filename.empty()) body["image"] = filename;
    body["ms"] =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    SendJson(res, 200, body);
  }

  // POST /v1/classify/batch: every file field of a multipart request (at most
  // opt.max_batch_images, opt.max_batch_bytes in all), answered in order in one response. A
  // bad image is its own result with an "error" (the others are answered); a bad parameter
  // or an over-limit request is a 4xx for the whole request.
  void ClassifyBatch(const HttpRequest& req, HttpResponse& res) {
    const auto t0 = std::chrono::steady_clock::now();
    if (!req.multipart) {
      throw HttpError{400, "send multipart/form-data with one file field per image ('image')"};
    }
    std::vector<const HttpFormField*> files;
    size_t bytes = 0;
    for (const auto& [name, f] : req.form) {
      if (f.filename.empty() && name != "image") continue;
      files.push_back(&f);
      bytes += f.content.size();
    }
    if (files.empty()) throw HttpError{400, "no images: send each one as a file field 'image'"};
    if (files.size() > opt.max_batch_images) {
      throw HttpError{413, std::to_string(files.size()) + " images in one request; the limit is " +
                               std::to_string(opt.max_batch_images) + " (split the batch)"};
    }
    if (bytes > opt.max_batch_bytes) {
      throw HttpError{413, "images of " + std::to_string(bytes) + " bytes in all; the limit is " +
                               std::to_string(opt.max_batch_bytes) + " (split the batch)"};
    }
    const QueryRequest r = ParseQuery(Params(req), true);
    json results = json::array();
    size_t failed = 0;
    for (const HttpFormField* f : files) {
      json one;
      try {
        one = AnswerImage(r, f->content);
      } catch (const HttpError& e) {
        if (e.status >= 500) throw;  // the store or the model: the whole request fails
        one = {{"error", {{"status", e.status}, {"message", e.message}}}};
        ++failed;
      }
      one["image"] = f->filename;
      results.push_back(std::move(one));
    }
    SendJson(
        res, 200,
        {{"results", results},
         {"count", results.size()},
         {"failed", failed},
         {"ms", std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                    .count()}});
  }

  void RequireToken(const HttpRequest& req) {
    if (opt.token.empty()) {
      throw HttpError{401, "this server is read-only: start it with --token (or NEARLABEL_TOKEN)"};
    }
    const std::string auth = req.Header("authorization");
    const std::string prefix = "Bearer ";
    if (auth.compare(0, prefix.size(), prefix) != 0 ||
        !SameToken(auth.substr(prefix.size()), opt.token)) {
      throw HttpError{401, "missing or wrong bearer token (Authorization: Bearer TOKEN)"};
    }
  }

  static int64_t IdOf(const std::string& s) {
    try {
      size_t used = 0;
      const long long id = std::stoll(s, &used);
      if (used == s.size() && id > 0) return id;
    } catch (...) {
    }
    throw HttpError{400, "item ids are positive integers"};
  }

  void AddItem(const HttpRequest& req, HttpResponse& res) {
    RequireToken(req);
    if (!req.multipart) {
      throw HttpError{400, "send multipart/form-data: 'image' and 'label' (or 'metadata')"};
    }
    auto params = Params(req);
    params.erase("image");
    RejectUnknown(params, {"label", "metadata"});
    json meta = json::object();
    const std::string meta_text = TextParam(params, "metadata");
    if (meta_text.size() > kMaxMetadataBytes) {
      throw HttpError{413, "metadata of " + std::to_string(meta_text.size()) +
                               " bytes is over the limit of " + std::to_string(kMaxMetadataBytes)};
    }
    if (!meta_text.empty()) {
      bool too_deep = false;
      meta = ParseJson(meta_text, &too_deep);
      if (too_deep) throw HttpError{400, "metadata: " + JsonTooDeepMessage()};
      if (!meta.is_object()) throw HttpError{400, "metadata must be a JSON object"};
    }
    const std::string label = TextParam(params, "label");
    if (!label.empty()) meta[label_field] = label;
    if (MetadataField(meta, label_field).empty()) {
      throw HttpError{
          400, "the image needs a label: field 'label' (or '" + label_field + "' in 'metadata')"};
    }
    auto [bytes, filename] = ImageOf(req);
    NewItem item;
    item.embedding = Embed(bytes, &item.thumbnail_jpeg);
    item.sha256 = Sha256Hex(bytes);
    item.source = "upload:" + (filename.empty() ? item.sha256.substr(0, 12) : filename);
    item.metadata_json = meta.dump();
    InsertResult r;
    {
      std::lock_guard<std::mutex> lock(store_mu);
      auto inserted = store->InsertBatch({item});
      if (!inserted.ok()) throw StoreError(inserted.status());
      r = *inserted;
    }
    // The next search finds the row: the collection applies the store's change log now (the
    // sync thread would within 500 ms).
    CatchUp();
    SendJson(
        res, r.inserted == 1 ? 201 : 200,
        {{"id", r.ids[0]}, {"duplicate", r.inserted == 0}, {"thumbnail", ThumbnailUrl(r.ids[0])}});
  }

  void DeleteItem(const HttpRequest& req, HttpResponse& res, const std::string& id_text) {
    RequireToken(req);
    const int64_t id = IdOf(id_text);
    Result<std::vector<int64_t>> gone = std::vector<int64_t>();
    {
      std::lock_guard<std::mutex> lock(store_mu);
      gone = store->Delete("id = " + std::to_string(id));
    }
    if (!gone.ok()) throw StoreError(gone.status());
    if (gone->empty()) throw HttpError{404, "no item " + std::to_string(id)};
    CatchUp();
    SendJson(res, 200, {{"deleted", id}});
  }

  // Every request: routes by method and path; an HttpError is its status and message, any
  // other exception a 500 whose detail goes to the server's log, not to the client.
  void Handle(const HttpRequest& req, HttpResponse& res) {
    try {
      Route(req, res);
    } catch (const HttpError& e) {
      res = ErrorResponse(e.status, e.message);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "nearlabel: serve: %s %s failed: %s\n", req.method.c_str(),
                   RouteName(req.method, req.path).c_str(), e.what());
      res = ErrorResponse(500, "internal error (the server's log has the details)");
    }
  }

  void Route(const HttpRequest& req, HttpResponse& res) {
    const std::string& m = req.method;
    const std::string& path = req.path;
    if (m == "GET" && path == "/") {
      res.content_type = "text/html; charset=utf-8";
      res.body = kWebPage;
    } else if (m == "GET" && path == "/healthz") {
      SendJson(res, 200, {{"status", "ok"}});
    } else if (m == "GET" && path == "/metrics") {
      res.content_type = "text/plain; version=0.0.4";
      res.body = http->MetricsText();
    } else if (m == "GET" && path == "/v1/stats") {
      Stats(res);
    } else if (m == "POST" && path == "/v1/classify") {
      Query(req, res, true);
    } else if (m == "POST" && path == "/v1/classify/batch") {
      ClassifyBatch(req, res);
    } else if (m == "POST" && path == "/v1/search") {
      Query(req, res, false);
    } else if (m == "POST" && path == "/v1/anomaly") {
      ScoreAnomaly(req, res);
    } else if (m == "GET" && path == "/v1/items") {
      Browse(req, res);
    } else if (m == "POST" && path == "/v1/items") {
      AddItem(req, res);
    } else if (auto id = ItemIdPart(path, "/thumbnail"); id && m == "GET") {
      Thumbnail(*id, res);
    } else if (auto item = ItemIdPart(path, ""); item && m == "GET") {
      GetItem(req, *item, res);
    } else if (item && m == "DELETE") {
      DeleteItem(req, res, *item);
    } else {
      const bool known = RouteName(m, path) != "other" || ItemIdPart(path, "");
      throw HttpError{known ? 405 : 404, (known ? "method not allowed: " : "no route ") + m + " " +
                                             (IsValidUtf8(path) ? path : "?")};
    }
  }

  // Rows per label, most frequent first (one GROUP BY, cached until the next change).
  json LabelCounts() {
    const CollectionState cs = collection->state();
    std::lock_guard<std::mutex> cache_lock(labels_mu);
    if (labels_change == cs.change_id && follows) return labels_cache;
    Result<std::vector<SqlResult>> r = std::vector<SqlResult>();
    {
      std::lock_guard<std::mutex> lock(store_mu);
      r = store->Execute("SELECT field(metadata, " + SqlStringLiteral(label_field) +
                         ") AS label, count(*) AS n FROM items GROUP BY 1 ORDER BY 2 DESC, 1");
    }
    if (!r.ok()) throw StoreError(r.status());
    json labels = json::array();
    for (const auto& row : r->front().rows) {
      const std::string label = SqlValueText(row[0]);
      labels.push_back({{"label", std::holds_alternative<std::monostate>(row[0]) ? "" : label},
                        {"count", std::get<int64_t>(row[1])}});
    }
    labels_change = cs.change_id;
    return labels_cache = labels;
  }

  void Stats(HttpResponse& res) {
    const CollectionState cs = collection->state();
    json labels = LabelCounts();
    SendJson(res, 200,
             {{"rows", cs.rows},
              {"model", info.model},
              {"dims", info.dims},
              {"metric", info.metric},
              {"label_field", label_field},
              {"labels", labels},
              {"index", cs.index_rows ? "hnsw" : "none (exact scan)"},
              {"index_rows", cs.index_rows},
              {"index_lag", cs.index_lag},
              {"segment",
               {{"rows", cs.segment_rows},
                {"file", !cs.segment.empty()},
                {"added", cs.overlay_added},
                {"removed", cs.overlay_removed}}},
              {"writable", !opt.token.empty()},
              {"anomaly", AnomalyInfo()},
              {"sync", follows ? json{{"change_id", cs.change_id},
                                      {"connected", feed_connected.load()},
                                      {"reconnects", reconnects.load()}}
                               : json(nullptr)},
              {"limits",
               {{"max_upload_bytes", opt.max_upload_bytes},
                {"max_pixels", opt.max_pixels},
                {"max_batch_images", opt.max_batch_images},
                {"max_batch_bytes", opt.max_batch_bytes}}}});
  }

  void Browse(const HttpRequest& req, HttpResponse& res) {
    auto params = Params(req);
    RejectUnknown(params, {"label", "offset", "limit"});
    const int offset = IntParam(params, "offset", 0, 0, 1 << 30);
    const int limit = IntParam(params, "limit", 60, 1, 1000);
    const std::string label = TextParam(params, "label");
    const std::string field = "field(metadata, " + SqlStringLiteral(label_field) + ")";
    const std::string where =
        label.empty() ? "" : " WHERE " + field + " = " + SqlStringLiteral(label);
    Result<std::vector<SqlResult>> r = std::vector<SqlResult>();
    {
      std::lock_guard<std::mutex> lock(store_mu);
      r = store->Execute("SELECT count(*) FROM items" + where + "; SELECT id, source, " + field +
                         " FROM items" + where + " ORDER BY id LIMIT " + std::to_string(limit) +
                         " OFFSET " + std::to_string(offset));
    }
    if (!r.ok() || r->size() != 2)
      throw StoreError(r.ok() ? Status::Internal("browse") : r.status());
    json items = json::array();
    for (const auto& row : (*r)[1].rows) {
      const int64_t id = std::get<int64_t>(row[0]);
      items.push_back(
          {{"id", id},
           {"label", std::holds_alternative<std::monostate>(row[2]) ? "" : SqlValueText(row[2])},
           {"source", Source(SqlValueText(row[1]))},
           {"thumbnail", ThumbnailUrl(id)}});
    }
    SendJson(
        res, 200,
        {{"total", std::get<int64_t>((*r)[0].rows[0][0])}, {"offset", offset}, {"items", items}});
  }

  void GetItem(const HttpRequest& req, const std::string& id_text, HttpResponse& res) {
    RejectUnknown(Params(req), {});
    const int64_t id = IdOf(id_text);
    auto item = collection->GetItem(id);
    if (!item.ok() && item.status().code() == Status::Code::kNotFound) {
      throw HttpError{404, "no item " + std::to_string(id)};
    }
    if (!item.ok()) throw StoreError(item.status());
    json meta = ParseJson(item->metadata_json);
    SendJson(res, 200,
             {{"id", id},
              {"source", Source(item->source)},
              {"label", MetadataField(meta, label_field)},
              {"metadata", meta},
              {"thumbnail", ThumbnailUrl(id)}});
  }

  void Thumbnail(const std::string& id_text, HttpResponse& res) {
    const int64_t id = IdOf(id_text);
    Result<std::string> jpeg = Status::NotFound("");
    {
      std::lock_guard<std::mutex> lock(store_mu);
      jpeg = store->GetThumbnail(id);
    }
    if (!jpeg.ok()) {
      // A row stored before thumbnails were kept: made from its file if it is there.
      if (auto item = collection->GetItem(id); item.ok()) {
        jpeg = ThumbnailOfFile(item->source, opt.max_pixels);
      }
    }
    if (!jpeg.ok()) {
      throw HttpError{404, "no thumbnail for item " + std::to_string(id) +
                               " (stored without one, and its file is gone)"};
    }
    res.headers.push_back({"Cache-Control", "max-age=3600"});
    res.content_type = "image/jpeg";
    res.body = std::move(*jpeg);
  }

  // A row's source as clients see it: relative to the directory all sources share, unless
  // the operator asked for full paths (serve --show-paths).
  std::string Source(const std::string& source) const {
    if (opt.show_paths || source_root.empty()) return source;
    if (source.compare(0, source_root.size(), source_root) == 0) {
      return source.substr(source_root.size());
    }
    const size_t slash = source.rfind('/');
    return source[0] == '/' && slash != std::string::npos ? source.substr(slash + 1) : source;
  }

  // Gauges for /metrics: the collection's size and how much of it the index covers.
  std::string CollectionMetrics() const {
    const CollectionState cs = collection->state();
    const size_t rows = cs.rows;
    std::string out;
    out += "# HELP nearlabel_rows Rows the server searches.\n# TYPE nearlabel_rows gauge\n";
    out += "nearlabel_rows " + std::to_string(rows) + "\n";
    out += "# HELP nearlabel_index_rows Rows in the HNSW index (0: exact scans).\n";
    out += "# TYPE nearlabel_index_rows gauge\n";
    out += "nearlabel_index_rows " + std::to_string(cs.index_rows) + "\n";
    out += "# HELP nearlabel_anomaly_model 1 when the server scores anomalies.\n";
    out += "# TYPE nearlabel_anomaly_model gauge\n";
    out += std::string("nearlabel_anomaly_model ") + (anomaly.model ? "1" : "0") + "\n";
    return out;
  }

  void StartHttp() {
    HttpServerOptions ho;
    ho.max_body_bytes = opt.max_upload_bytes + (64u << 10);  // + multipart overhead
    ho.workers = opt.threads > 0
                     ? opt.threads
                     : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    HttpHandlers hh;
    hh.handle = [this](const HttpRequest& req, HttpResponse& res) { Handle(req, res); };
    hh.cheap = [](const std::string& m, const std::string& path) {
      return m == "GET" && (path == "/" || path == "/healthz" || path == "/metrics");
    };
    hh.route_name = RouteName;
    // A batch carries many images' worth; every other route one image at most.
    hh.max_body = [this](const std::string& m, const std::string& path) {
      return m == "POST" && path == "/v1/classify/batch" ? opt.max_batch_bytes + (64u << 10)
                                                         : opt.max_upload_bytes + (64u << 10);
    };
    hh.error = ErrorResponse;
    hh.extra_metrics = [this] { return CollectionMetrics(); };
    http = std::make_unique<HttpServer>(ho, std::move(hh));
  }
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() = default;

Result<std::unique_ptr<Server>> Server::Create(std::unique_ptr<Store> store,
                                               std::unique_ptr<Embedder> embedder,
                                               const ServerOptions& options,
                                               ServerAnomaly anomaly) {
  if (!anomaly.model != !anomaly.patch_embedder) {
    return Status::InvalidArgument("an anomaly model needs its patch embedder, and only it");
  }
  auto impl = std::make_unique<Impl>();
  impl->opt = options;
  impl->anomaly = std::move(anomaly);
  NL_ASSIGN_OR_RETURN(auto info, store->GetCollection());
  if (!info) {
    return Status::InvalidArgument("store " + store->location() +
                                   " is empty: ingest a dataset first");
  }
  impl->info = *info;
  impl->label_field = !options.label_field.empty() ? options.label_field
                      : info->label_field.empty()  ? "label"
                                                   : info->label_field;
  // (store->location() masks a PostgreSQL password: a URI with one must be given.)
  if (impl->opt.store_location.empty()) impl->opt.store_location = store->location();
  impl->shared = IsPostgresUri(impl->opt.store_location);
  CollectionOptions copt;
  copt.cache_dir = options.cache_dir;
  copt.build_index = true;            // a shared store keeps no index file: each node has its own
  copt.keep_metadata = impl->shared;  // answers go on while the database is down
  NL_ASSIGN_OR_RETURN(impl->collection, Collection::Open(impl->opt.store_location, copt));
  impl->notice = impl->collection->state().notices + impl->collection->state().log;
  if (!impl->notice.empty() && impl->notice.back() == '\n') impl->notice.pop_back();
  NL_ASSIGN_OR_RETURN(impl->source_root, SourceRoot(*store));
  impl->store = std::move(store);
  impl->follows = impl->collection->state().follows;
  if (impl->follows) {
    Impl* raw = impl.get();
    impl->sync_thread = std::thread([raw] { raw->SyncLoop(); });
  }
  impl->embedder = std::move(embedder);
  impl->StartHttp();
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Status Server::Bind() {
  Impl& s = *impl_;
  NL_RETURN_IF_ERROR(s.http->Bind(s.opt.host, s.opt.port));
  s.port = s.http->port();
  return Status::OK();
}

Status Server::Run() {
  Impl& s = *impl_;
  // Nothing to save on the way out: every row is in the store, and the next writer (ingest,
  // delete, index build) brings the index up to date from the change log.
  return s.http->Run();
}

void Server::Stop() { impl_->http->Stop(); }
std::string Server::HandleRawRequest(const std::string& request) {
  return impl_->http->HandleRaw(request);
}
int Server::port() const { return impl_->port; }
const std::string& Server::notice() const { return impl_->notice; }

}  // namespace nearlabel
