// The HTTP API: routes, parameter checking and JSON over the HTTP layer (http_server.h,
// libmicrohttpd). Threading: the layer's worker pool runs requests concurrently; searches share
// LiveCollection's read lock, the model runs one image at a time (embed_mu), the store is used by
// one request at a time (store_mu), the anomaly model's patch embedder runs one image at a time
// (anomaly_mu), and writes take LiveCollection's write lock after the store has committed. On a
// shared store (PostgreSQL) one sync thread follows the store's change feed on a connection of its
// own and applies other writers' rows to LiveCollection.
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

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "common/data_uri.h"
#include "common/sha256.h"
#include "nearlabel/classify.h"
#include "nearlabel/dataset.h"
#include "nearlabel/image.h"
#include "server/http_server.h"
#include "server/live_collection.h"

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
                                              "/v1/anomaly", "/v1/items"};
  if (fixed.count(path)) return method + " " + path;
  if (ItemIdPart(path, "/thumbnail")) return method + " /v1/items/{id}/thumbnail";
  if (ItemIdPart(path, "")) return method + " /v1/items/{id}";
  return "other";
}

// The directory every source shares ("" when none): sources are answered relative to it, so
// a client learns the dataset's layout, not the server's file system.
std::string CommonDirectory(const std::vector<std::string>& sources) {
  std::string common;
  bool first = true;
  for (const std::string& src : sources) {
    if (src.empty() || src[0] != '/') continue;  // uploads ("upload:...") and relative paths
    const std::string dir = src.substr(0, src.rfind('/') + 1);
    if (first) {
      common = dir;
      first = false;
      continue;
    }
    size_t n = 0;
    while (n < common.size() && n < dir.size() && common[n] == dir[n]) ++n;
    common.resize(common.rfind('/', n == 0 ? 0 : n - 1) + 1);
  }
  return common;
}

}  // namespace

struct Server::Impl {
  ServerOptions opt;
  std::unique_ptr<Store> store;
  std::mutex store_mu;
  std::unique_ptr<Embedder> embedder;
  std::mutex embed_mu;
  std::unique_ptr<LiveCollection> live;
  ServerAnomaly anomaly;
  std::mutex anomaly_mu;
  CollectionInfo info;
  std::string label_field;
  std::string notice;
  std::string source_root;  // the directory every stored source shares (see Source)
  std::unique_ptr<HttpServer> http;
  int port = 0;

  // ---- Shared stores: following the change feed ----
  std::unique_ptr<ChangeFeed> feed;
  std::thread sync_thread;
  std::mutex sync_mu;  // guards stopping (with sync_cv)
  std::condition_variable sync_cv;
  bool stopping = false;
  std::atomic<int64_t> synced_change{0};  // every change up to this one is applied
  std::atomic<bool> feed_connected{true};
  std::atomic<int64_t> reconnects{0};

  ~Impl() { StopSync(); }

  void StopSync() {
    {
      std::lock_guard<std::mutex> lock(sync_mu);
      stopping = true;
    }
    sync_cv.notify_all();
    if (sync_thread.joinable()) sync_thread.join();
  }

  // Applies every change after synced_change. False when the connection failed.
  bool CatchUp() {
    for (;;) {
      auto changes = feed->ChangesAfter(synced_change.load(), 4096);
      if (!changes.ok()) return false;
      for (const StoreChange& c : *changes) {
        if (c.deleted) {
          live->Remove(c.item_id);
        } else if (c.present) {
          Status st = live->Add(c.item_id, c.embedding, c.source, c.metadata);
          if (!st.ok()) {
            std::fprintf(stderr, "nearlabel: serve: row %lld not applied: %s\n",
                         static_cast<long long>(c.item_id), st.message().c_str());
          }
        }
        synced_change = c.change_id;
      }
      if (changes->size() < 4096) return true;
    }
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
      auto woke = feed->WaitForChanges(500);
      const bool ok = woke.ok() && CatchUp();
      if (ok) {
        if (!feed_connected.exchange(true)) {
          ++reconnects;
          std::fprintf(stderr,
                       "nearlabel: serve: database connection back; caught up to change %lld\n",
                       static_cast<long long>(synced_change.load()));
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
      return HttpError{503, std::string(feed ? "the PostgreSQL store" : "the store") +
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

  // Ids allowed by a `within` parameter ("FIELD=VALUE"), or nullopt for no filter.
  std::optional<std::vector<int64_t>> Within(const std::string& within) {
    if (within.empty()) return std::nullopt;
    auto sql = WithinToSql(within);
    if (!sql.ok()) throw HttpError{400, sql.status().message()};  // WithinToSql's rule and words
    std::lock_guard<std::mutex> lock(store_mu);
    auto ids = store->SelectIds(*sql);
    if (!ids.ok()) throw StoreError(ids.status());
    return *ids;
  }

  json Neighbors(const std::vector<IdNeighbor>& found, const std::string& field,
                 std::vector<std::string>* labels) {
    json out = json::array();
    for (const IdNeighbor& nb : found) {
      LiveCollection::Row row;
      if (!live->Get(nb.id, &row)) continue;  // deleted meanwhile
      json meta = ParseJson(row.metadata);
      std::string label = field == label_field ? row.label : MetadataField(meta, field);
      if (labels) labels->push_back(label);
      out.push_back({{"id", nb.id},
                     {"distance", nb.distance},
                     {"label", label},
                     {"source", Source(row.source)},
                     {"metadata", meta},
                     {"thumbnail", ThumbnailUrl(nb.id)}});
    }
    return out;
  }

  void Query(const HttpRequest& req, HttpResponse& res, bool classify) {
    const auto t0 = std::chrono::steady_clock::now();
    auto params = Params(req);
    params.erase("image");
    if (classify) {
      RejectUnknown(params, {"k", "vote", "within", "ef", "label"});
    } else {
      RejectUnknown(params, {"k", "within", "ef"});
    }
    const int k = IntParam(params, "k", classify ? 5 : 10, 1, kMaxK);
    const int ef = IntParam(params, "ef", 0, 1, 100000);
    Vote vote = Vote::kMajority;
    if (classify && !Param(params, "vote").empty()) {
      auto v = ParseVote(Param(params, "vote"));
      if (!v.ok()) throw HttpError{400, v.status().message()};
      vote = *v;
    }
    const std::string field = Param(params, "label").empty() ? label_field : Param(params, "label");
    auto [bytes, filename] = ImageOf(req);
    std::vector<float> q = Embed(bytes, nullptr);
    auto allowed = Within(Param(params, "within"));
    std::string plan;
    auto found = live->Search(q.data(), k, allowed ? &*allowed : nullptr, ef, &plan);
    std::vector<std::string> labels;
    json body = {{"neighbors", Neighbors(found, field, &labels)}, {"plan", plan}};
    if (!filename.empty()) body["image"] = filename;
    if (classify) {
      std::vector<Neighbor> nbs;
      for (size_t i = 0; i < labels.size(); ++i) nbs.push_back({i, found[i].distance});
      Prediction p = VoteLabel(nbs, labels, vote);
      body["label"] = p.label;
      body["label_field"] = field;
      body["confidence"] = p.confidence;
      body["vote"] = VoteName(vote);
      body["k"] = k;
      json scores = json::array();
      for (const auto& [l, s] : p.scores) scores.push_back({{"label", l}, {"score", s}});
      body["scores"] = scores;
    }
    body["ms"] =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    SendJson(res, 200, body);
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
      // Added to the in-memory rows while the store lock is held, so two uploads reach the
      // collection in id order.
      if (r.inserted == 1) {
        Status st = live->Add(r.ids[0], item.embedding, item.source, item.metadata_json);
        if (!st.ok()) throw HttpError{500, st.message()};
      }
    }
    SendJson(
        res, r.inserted == 1 ? 201 : 200,
        {{"id", r.ids[0]}, {"duplicate", r.inserted == 0}, {"thumbnail", ThumbnailUrl(r.ids[0])}});
  }

  void DeleteItem(const HttpRequest& req, HttpResponse& res, const std::string& id_text) {
    RequireToken(req);
    const int64_t id = IdOf(id_text);
    std::lock_guard<std::mutex> lock(store_mu);
    auto gone = store->Delete("id = " + std::to_string(id));
    if (!gone.ok()) throw StoreError(gone.status());
    if (gone->empty()) throw HttpError{404, "no item " + std::to_string(id)};
    live->Remove(id);
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

  void Stats(HttpResponse& res) {
    json labels = json::array();
    for (const auto& [l, n] : live->LabelCounts()) labels.push_back({{"label", l}, {"count", n}});
    SendJson(
        res, 200,
        {{"rows", live->size()},
         {"model", info.model},
         {"dims", info.dims},
         {"metric", info.metric},
         {"label_field", label_field},
         {"labels", labels},
         {"index", live->has_index() ? "hnsw" : "none (exact scan)"},
         {"writable", !opt.token.empty()},
         {"anomaly", AnomalyInfo()},
         {"sync", feed ? json{{"change_id", synced_change.load()},
                              {"connected", feed_connected.load()},
                              {"reconnects", reconnects.load()}}
                       : json(nullptr)},
         {"limits", {{"max_upload_bytes", opt.max_upload_bytes}, {"max_pixels", opt.max_pixels}}}});
  }

  void Browse(const HttpRequest& req, HttpResponse& res) {
    auto params = Params(req);
    RejectUnknown(params, {"label", "offset", "limit"});
    const int offset = IntParam(params, "offset", 0, 0, 1 << 30);
    const int limit = IntParam(params, "limit", 60, 1, 1000);
    size_t total = 0;
    json items = json::array();
    for (const auto& row : live->Browse(Param(params, "label"), offset, limit, &total)) {
      items.push_back({{"id", row.id},
                       {"label", row.label},
                       {"source", Source(row.source)},
                       {"thumbnail", ThumbnailUrl(row.id)}});
    }
    SendJson(res, 200, {{"total", total}, {"offset", offset}, {"items", items}});
  }

  void GetItem(const HttpRequest& req, const std::string& id_text, HttpResponse& res) {
    RejectUnknown(Params(req), {});
    const int64_t id = IdOf(id_text);
    LiveCollection::Row row;
    if (!live->Get(id, &row)) throw HttpError{404, "no item " + std::to_string(id)};
    SendJson(res, 200,
             {{"id", id},
              {"source", Source(row.source)},
              {"label", row.label},
              {"metadata", ParseJson(row.metadata)},
              {"thumbnail", ThumbnailUrl(id)}});
  }

  void Thumbnail(const std::string& id_text, HttpResponse& res) {
    const int64_t id = IdOf(id_text);
    Result<std::string> jpeg = Status::NotFound("");
    {
      std::lock_guard<std::mutex> lock(store_mu);
      jpeg = store->GetThumbnail(id);
    }
    LiveCollection::Row row;
    if (!jpeg.ok() && live->Get(id, &row)) {
      // A row stored before thumbnails were kept: made from its file if it is there.
      jpeg = ThumbnailOfFile(row.source, opt.max_pixels);
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
    const size_t rows = live->size();
    std::string out;
    out += "# HELP nearlabel_rows Rows the server searches.\n# TYPE nearlabel_rows gauge\n";
    out += "nearlabel_rows " + std::to_string(rows) + "\n";
    out += "# HELP nearlabel_index_rows Rows in the HNSW index (0: exact scans).\n";
    out += "# TYPE nearlabel_index_rows gauge\n";
    out += "nearlabel_index_rows " + std::to_string(live->index_rows()) + "\n";
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
  // A shared store: note the newest change before loading the rows, so that the rows plus
  // every later change are the whole table (a change applied twice is harmless).
  auto feed = store->OpenChangeFeed();
  if (feed.ok()) {
    impl->feed = std::move(*feed);
    NL_ASSIGN_OR_RETURN(int64_t last, impl->feed->LastChangeId());
    impl->synced_change = last;
  } else if (feed.status().code() != Status::Code::kUnsupported) {
    return feed.status();
  }
  NL_ASSIGN_OR_RETURN(impl->live, LiveCollection::Load(*store, impl->label_field, &impl->notice,
                                                       impl->feed != nullptr));
  impl->store = std::move(store);
  if (impl->feed) {
    Impl* raw = impl.get();
    impl->sync_thread = std::thread([raw] { raw->SyncLoop(); });
  }
  impl->embedder = std::move(embedder);
  impl->source_root = CommonDirectory(impl->live->Sources());
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
  NL_RETURN_IF_ERROR(s.http->Run());
  if (s.opt.token.empty()) return Status::OK();
  std::lock_guard<std::mutex> lock(s.store_mu);
  return s.live->SaveIndexIfChanged(*s.store);
}

void Server::Stop() { impl_->http->Stop(); }
std::string Server::HandleRawRequest(const std::string& request) {
  return impl_->http->HandleRaw(request);
}
int Server::port() const { return impl_->port; }
const std::string& Server::notice() const { return impl_->notice; }

}  // namespace nearlabel
