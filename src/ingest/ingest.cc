#include "nearlabel/ingest.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "common/fs.h"
#include "common/sha256.h"
#include "nearlabel/image.h"

namespace nearlabel {
namespace {

constexpr int kPrepRing = 3;       // batch buffers between decoding and inference
constexpr size_t kWriteQueue = 2;  // batches of rows between inference and the store

// One image after the preparation stage.
struct Prepared {
  size_t index = 0;  // into the input list
  Status status;
  std::string sha256;
  std::string thumbnail;  // JPEG
  bool already_stored = false;
};

// The prep ring for a LaneScheduler: one buffer more per lane beyond the first, so that the
// preparation stays a batch ahead of the lanes' open batches.
int RingFor(const Embedder& embedder) { return kPrepRing + std::max(1, embedder.lanes()) - 1; }

int DefaultThreads(int requested) {
  if (requested > 0) return requested;
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

// The preparation stage: `threads` workers read, hash, decode and preprocess the paths in
// order into a ring of `ring` batch buffers, so at most ring x batch_size tensors exist at
// any time whatever the dataset size. The consumer takes batches in order (0, 1, ...) and
// releases each one for reuse. Items whose sha256 is in `skip` are not decoded.
//
// Why it cannot deadlock: a worker only waits for the buffer of its own batch, and the
// lowest unfinished batch always has its buffer, so some worker can always proceed.
class PrepStage {
 public:
  struct Batch {
    size_t number = 0;   // which batch this buffer holds now
    size_t pending = 0;  // items not yet prepared
    std::vector<Prepared> items;
    std::vector<float> tensor;  // one 3 x height x width slot per item
  };

  PrepStage(const std::vector<std::string>& paths, const PreprocessSpec& spec, size_t batch_size,
            int threads, int ring, const std::unordered_set<std::string>* skip,
            bool make_thumbnails)
      : paths_(paths),
        spec_(spec),
        bs_(std::max<size_t>(1, batch_size)),
        slot_(static_cast<size_t>(3) * spec.width * spec.height),
        skip_(skip),
        thumbnails_(make_thumbnails),
        ring_(std::max(1, ring)) {
    for (size_t k = 0; k < ring_.size(); ++k) Assign(ring_[k], k);
    const int t = std::min<int>(threads, static_cast<int>(std::max<size_t>(1, paths.size())));
    for (int i = 0; i < t; ++i) workers_.emplace_back([this] { Work(); });
  }
  ~PrepStage() {
    Stop();
    for (auto& w : workers_) w.join();
  }
  PrepStage(const PrepStage&) = delete;
  PrepStage& operator=(const PrepStage&) = delete;

  size_t batches() const { return (paths_.size() + bs_ - 1) / bs_; }
  size_t slot_floats() const { return slot_; }

  // Blocks until batch `number` is prepared; null once stopped. Take the batches in order;
  // batch number+ring comes only after batch number is released.
  Batch* Take(size_t number) {
    Batch& b = ring_[number % ring_.size()];
    std::unique_lock<std::mutex> lock(mu_);
    ready_.wait(lock, [&] { return stop_ || (b.number == number && b.pending == 0); });
    return b.number == number && b.pending == 0 ? &b : nullptr;
  }

  // Hands the buffer of `b` to batch b.number + ring.
  void Release(Batch& b) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      Assign(b, b.number + ring_.size());
    }
    free_.notify_all();
  }

  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    free_.notify_all();
    ready_.notify_all();
  }

 private:
  // Caller holds mu_ (or is the constructor).
  void Assign(Batch& b, size_t number) {
    b.number = number;
    const size_t begin = std::min(number * bs_, paths_.size());
    const size_t n = std::min(bs_, paths_.size() - begin);
    b.pending = n;
    b.items.assign(n, Prepared{});
    b.tensor.resize(n * slot_);
  }

  void Work() {
    for (;;) {
      const size_t i = next_.fetch_add(1);
      if (i >= paths_.size()) return;
      const size_t number = i / bs_;
      Batch& b = ring_[number % ring_.size()];
      {
        std::unique_lock<std::mutex> lock(mu_);
        free_.wait(lock, [&] { return stop_ || b.number == number; });
        if (stop_) return;
      }
      const size_t j = i - number * bs_;
      Prepare(i, &b.items[j], b.tensor.data() + j * slot_);
      bool done;
      {
        std::lock_guard<std::mutex> lock(mu_);
        done = --b.pending == 0;
      }
      if (done) ready_.notify_all();
    }
  }

 public:
  // CPU seconds the workers spent in each step so far, summed over workers.
  IngestReport::PrepSeconds Seconds() const {
    auto s = [this](Step step) { return ns_[step].load() * 1e-9; };
    return {s(kRead), s(kSha256), s(kDecode), s(kPreprocess), s(kThumbnail)};
  }

 private:
  enum Step { kRead, kSha256, kDecode, kPreprocess, kThumbnail, kSteps };
  // This thread's CPU time in ns: the workers share the cores with inference, and a wall
  // clock would also count the time a worker waited for a core.
  static int64_t ThreadNs() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  }
  // Adds this thread's CPU time since *t to `step` and moves *t on.
  void Lap(Step step, int64_t* t) const {
    const int64_t now = ThreadNs();
    ns_[step] += now - *t;
    *t = now;
  }

  void Prepare(size_t index, Prepared* p, float* tensor) const {
    p->index = index;
    int64_t t = ThreadNs();
    auto bytes = ReadFileToString(paths_[index], 1ull << 30);
    Lap(kRead, &t);
    if (!bytes.ok()) {
      p->status = bytes.status();
      return;
    }
    p->sha256 = Sha256Hex(*bytes);
    Lap(kSha256, &t);
    if (skip_ && skip_->count(p->sha256)) {
      p->already_stored = true;
      return;
    }
    auto img = DecodeImage(*bytes);
    Lap(kDecode, &t);
    if (!img.ok()) {
      p->status = img.status();
      return;
    }
    PreprocessInto(*img, spec_, tensor);
    Lap(kPreprocess, &t);
    if (thumbnails_) p->thumbnail = EncodeThumbnail(*img);
    Lap(kThumbnail, &t);
  }

  const std::vector<std::string>& paths_;
  const PreprocessSpec spec_;
  const size_t bs_;
  const size_t slot_;
  const std::unordered_set<std::string>* skip_;
  const bool thumbnails_;
  std::vector<Batch> ring_;
  std::atomic<size_t> next_{0};
  std::mutex mu_;
  std::condition_variable ready_;  // a batch finished preparing
  std::condition_variable free_;   // a buffer was released (or stop)
  bool stop_ = false;
  std::vector<std::thread> workers_;
  mutable std::atomic<int64_t> ns_[kSteps] = {};
};

// Packs the tensors of the items `which` (ascending) to the front of b.tensor, in order.
void PackSelected(PrepStage::Batch& b, size_t slot, const std::vector<size_t>& which) {
  for (size_t j = 0; j < which.size(); ++j) {  // slot i only ever moves down
    if (which[j] != j) {
      std::copy(b.tensor.begin() + which[j] * slot, b.tensor.begin() + (which[j] + 1) * slot,
                b.tensor.begin() + j * slot);
    }
  }
}

// The embedding stage of Ingest. Each lane of the embedder (Embedder::lanes) runs on its own
// thread, lane 0 on the caller's, and takes the next lane_batch() images as soon as it is
// free, across batch boundaries: no lane waits for another at the end of a batch. (On two
// cores, splitting each batch over two sessions and joining left the cores idle ~5 % of the
// time; bench/embed_throughput prints how busy they are.) Batches are opened in order:
// `select` names the items to embed; then handed on whole and in order by whichever lane
// completes the lowest open batch: `hand_on(batch, which, vectors, errors)` (vectors packed in
// the order of `which`; errors[j] the embedder's error for which[j], if any), false to stop.
// A stop (`stop` true) opens no more batches and finishes the open ones. An embedder error
// either halts the run, abandoning the open batches (`halt_on_error`), or is that chunk's
// images' error.
class LaneScheduler {
 public:
  using SelectFn = std::function<std::vector<size_t>(const PrepStage::Batch&)>;
  using HandOnFn = std::function<bool(PrepStage::Batch&, const std::vector<size_t>&,
                                      std::vector<float>&, const std::vector<Status>&)>;

  LaneScheduler(PrepStage& prep, Embedder& embedder, SelectFn select, HandOnFn hand_on,
                const std::atomic<bool>* stop, bool halt_on_error)
      : prep_(prep),
        embedder_(embedder),
        select_(std::move(select)),
        hand_on_(std::move(hand_on)),
        stop_(stop),
        halt_on_error_(halt_on_error),
        lane_batch_(static_cast<size_t>(std::max(1, embedder.lane_batch()))),
        dims_(embedder.floats_per_image()) {}

  // Runs every lane until all batches are handed on, a stop, or an error; returns the
  // embedder error that halted it.
  Status Run() {
    const int lanes = std::max(1, embedder_.lanes());
    std::vector<std::thread> others;
    for (int lane = 1; lane < lanes; ++lane) others.emplace_back([this, lane] { Lane(lane); });
    Lane(0);
    for (auto& t : others) t.join();
    return status_;
  }
  bool interrupted() const { return interrupted_; }
  // Seconds each lane spent embedding, and waiting for prepared images, averaged over lanes.
  double embed_seconds() const { return embed_ns_ * 1e-9 / std::max(1, embedder_.lanes()); }
  double wait_seconds() const { return wait_ns_ * 1e-9 / std::max(1, embedder_.lanes()); }

 private:
  struct Open {
    PrepStage::Batch* batch;
    std::vector<size_t> which;   // items to embed, their tensors packed to the front
    std::vector<float> vecs;     // which.size() x dims
    std::vector<Status> errors;  // per entry of which
    size_t claimed = 0, embedded = 0;
  };
  using Clock = std::chrono::steady_clock;
  static int64_t Ns(Clock::time_point t0) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
  }

  void Lane(int lane) {
    std::unique_lock<std::mutex> lock(mu_);
    while (!halted_) {
      if (Open* o = Claimable()) {
        const size_t j = o->claimed, c = std::min(lane_batch_, o->which.size() - j);
        o->claimed += c;
        lock.unlock();
        const auto t0 = Clock::now();
        Status st = embedder_.EmbedOnLane(lane, o->batch->tensor.data() + j * prep_.slot_floats(),
                                          static_cast<int>(c), o->vecs.data() + j * dims_);
        lock.lock();
        embed_ns_ += Ns(t0);
        if (!st.ok() && halt_on_error_) {
          if (status_.ok()) status_ = st;
          Halt();
          return;
        }
        if (!st.ok()) std::fill(o->errors.begin() + j, o->errors.begin() + j + c, st);
        o->embedded += c;
        HandOnFinished();
      } else if (opening_) {
        const auto t0 = Clock::now();
        changed_.wait(lock);
        wait_ns_ += Ns(t0);
      } else if (next_ >= prep_.batches() || (stop_ && stop_->load())) {
        interrupted_ = interrupted_ || next_ < prep_.batches();
        return;  // nothing more to open: the other lanes finish what they hold
      } else {
        OpenNext(lock);
      }
    }
  }

  // The first open batch with images nobody has taken yet.
  Open* Claimable() {
    for (Open& o : open_) {
      if (o.claimed < o.which.size()) return &o;
    }
    return nullptr;
  }

  // Takes the next batch from the preparation stage (waiting for it without the lock).
  void OpenNext(std::unique_lock<std::mutex>& lock) {
    opening_ = true;
    const size_t number = next_++;
    lock.unlock();
    const auto t0 = Clock::now();
    PrepStage::Batch* taken = prep_.Take(number);
    const int64_t waited = Ns(t0);
    if (!taken) {  // halted meanwhile
      lock.lock();
      opening_ = false;
      changed_.notify_all();
      return;
    }
    PrepStage::Batch& b = *taken;
    Open o{&b, select_(b), {}, {}, 0, 0};
    PackSelected(b, prep_.slot_floats(), o.which);
    o.vecs.resize(o.which.size() * dims_);
    o.errors.resize(o.which.size());
    lock.lock();
    wait_ns_ += waited;
    open_.push_back(std::move(o));
    opening_ = false;
    HandOnFinished();  // a batch with nothing to embed is finished at once
    changed_.notify_all();
  }

  // Hands on the finished batches at the front, in order. Caller holds mu_.
  void HandOnFinished() {
    while (!halted_ && !open_.empty() && open_.front().embedded == open_.front().which.size()) {
      Open& o = open_.front();
      if (!hand_on_(*o.batch, o.which, o.vecs, o.errors)) Halt();
      open_.pop_front();  // references to the other open batches stay valid (std::deque)
    }
  }

  void Halt() {
    halted_ = true;
    prep_.Stop();  // a lane waiting in Take for a buffer that is never released returns
    changed_.notify_all();
  }

  PrepStage& prep_;
  Embedder& embedder_;
  const SelectFn select_;
  const HandOnFn hand_on_;
  const std::atomic<bool>* const stop_;
  const bool halt_on_error_;
  const size_t lane_batch_;
  const size_t dims_;
  std::mutex mu_;
  std::condition_variable changed_;  // a batch was opened, or the run halted
  std::deque<Open> open_;            // in batch order
  size_t next_ = 0;                  // the next batch to open
  bool opening_ = false;             // a lane is taking batch next_ - 1
  bool halted_ = false;              // an error: every lane stops
  bool interrupted_ = false;
  Status status_;
  int64_t embed_ns_ = 0, wait_ns_ = 0;
};

// A stage on its own thread: runs `work` on each pushed job, in order, while the caller
// prepares the next. At most `capacity` jobs wait. The first error stops it: later pushes
// return false and Finish returns that error.
template <typename Job>
class StageThread {
 public:
  StageThread(std::function<Status(Job&)> work, size_t capacity)
      : work_(std::move(work)), capacity_(capacity) {
    thread_ = std::thread([this] { Run(); });
  }
  ~StageThread() { Finish(); }
  StageThread(const StageThread&) = delete;
  StageThread& operator=(const StageThread&) = delete;

  // Blocks while the queue is full. Returns false once a job has failed.
  bool Push(Job job) {
    std::unique_lock<std::mutex> lock(mu_);
    space_.wait(lock, [&] { return queue_.size() < capacity_ || !status_.ok(); });
    if (!status_.ok()) return false;
    queue_.push_back(std::move(job));
    work_ready_.notify_one();
    return true;
  }

  // Runs everything queued, stops the thread and returns the first error.
  Status Finish() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    work_ready_.notify_one();
    if (thread_.joinable()) thread_.join();
    return status_;
  }

 private:
  void Run() {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        work_ready_.wait(lock, [&] { return !queue_.empty() || closed_; });
        if (queue_.empty()) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      space_.notify_one();
      Status st = work_(job);
      if (!st.ok()) {
        std::lock_guard<std::mutex> lock(mu_);
        status_ = st;
        queue_.clear();
        space_.notify_all();
        return;
      }
    }
  }

  const std::function<Status(Job&)> work_;
  const size_t capacity_;
  std::mutex mu_;
  std::condition_variable work_ready_, space_;
  std::deque<Job> queue_;
  bool closed_ = false;
  Status status_;
  std::thread thread_;
};

// The store stage: commits each batch of rows (possibly none) that completes the first
// `done` listed images in its own transaction, then reports progress.
struct WriteJob {
  std::vector<NewItem> rows;
  size_t done = 0;
};
struct WriteCounts {
  size_t inserted = 0;    // read after Finish
  size_t duplicates = 0;  // rows another process stored meanwhile
  double seconds = 0;     // in InsertBatch
};
std::function<Status(WriteJob&)> CommitBatches(Store& store, const ProgressFn& progress,
                                               size_t total, WriteCounts* counts) {
  return [&store, &progress, total, counts](WriteJob& job) -> Status {
    if (!job.rows.empty()) {
      const auto t0 = std::chrono::steady_clock::now();
      NL_ASSIGN_OR_RETURN(auto ins, store.InsertBatch(job.rows));
      counts->seconds +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      counts->inserted += ins.inserted;
      counts->duplicates += ins.duplicates;
    }
    if (progress) progress(job.done, total);
    return Status::OK();
  };
}

std::string DumpJson(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// The store row of `item`, prepared as `p`, whose vector is the j-th of `vecs` (j x dims).
// Takes p's thumbnail.
NewItem RowOf(const DatasetItem& item, Prepared& p, const std::vector<float>& vecs, size_t j,
              size_t dims) {
  return {item.image_path, p.sha256, DumpJson(item.metadata),
          std::vector<float>(vecs.begin() + j * dims, vecs.begin() + (j + 1) * dims),
          std::move(p.thumbnail)};
}

// What one claim of a shared ingest comes to: the rows to store, and the claimed relative
// paths done (stored now or before) and failed (with why).
struct ClaimOutcome {
  std::vector<NewItem> rows;
  std::vector<std::string> done;
  std::vector<std::pair<std::string, std::string>> failed;
};

// Reads, prepares and embeds the claimed relative paths as one batch on every lane of the
// embedder, counting failed and already stored items in *rep. Returns the embedder's error.
Status EmbedClaim(const std::vector<std::string>& claimed, const DatasetListing& listing,
                  const std::unordered_map<std::string, size_t>& by_path,
                  const std::unordered_set<std::string>& stored, Embedder& embedder, int threads,
                  IngestReport* rep, ClaimOutcome* out) {
  std::vector<std::string> paths;
  std::vector<size_t> item_of_path;  // listing index per entry of `paths`
  for (const std::string& rel : claimed) {
    auto it = by_path.find(rel);
    if (it == by_path.end()) {
      out->failed.emplace_back(rel, "not in this worker's copy of the dataset");
      continue;
    }
    paths.push_back(listing.items[it->second].image_path);
    item_of_path.push_back(it->second);
  }
  if (paths.empty()) return Status::OK();
  PrepStage prep(paths, embedder.card().preprocess, paths.size(), threads, 1, &stored, true);
  auto select = [&](const PrepStage::Batch& batch) {
    std::vector<size_t> which;
    for (size_t i = 0; i < batch.items.size(); ++i) {
      const Prepared& p = batch.items[i];
      const std::string& rel = listing.items[item_of_path[p.index]].relative_path;
      if (!p.status.ok()) {
        ++rep->failed;
        rep->problems.push_back({paths[p.index], p.status.message()});
        out->failed.emplace_back(rel, p.status.message());
        continue;
      }
      if (p.already_stored) {
        ++rep->already_stored;
      } else {
        which.push_back(i);
      }
      out->done.push_back(rel);
    }
    return which;
  };
  const size_t dims = embedder.floats_per_image();
  auto hand_on = [&](PrepStage::Batch& batch, const std::vector<size_t>& which,
                     std::vector<float>& vecs, const std::vector<Status>&) {
    for (size_t j = 0; j < which.size(); ++j) {
      Prepared& p = batch.items[which[j]];
      out->rows.push_back(RowOf(listing.items[item_of_path[p.index]], p, vecs, j, dims));
    }
    return true;
  };
  LaneScheduler lanes(prep, embedder, select, hand_on, nullptr, /*halt_on_error=*/true);
  Status st = lanes.Run();
  rep->embed_seconds += lanes.embed_seconds();
  return st;
}

}  // namespace

Status PrepareStoreForDataset(Store& store, const ModelCard& card, const std::string& model_sha256,
                              const DatasetListing& listing) {
  CollectionInfo info;
  info.model = card.name;
  info.model_sha256 = model_sha256;
  info.dims = card.dims;
  info.embedding = EmbeddingOptionsJson(card.embedding);
  NL_ASSIGN_OR_RETURN(auto current, store.GetCollection());
  const EmbeddingOptions& e = card.embedding;
  if (current && current->embedding.empty() && !e.flip_average && e.power == 1 &&
      e.resize == card.preprocess_resize) {
    info.embedding = "";  // a store from before embedding options, used as it was made
  }
  const nlohmann::json& first = listing.items.front().metadata;
  info.label_field = listing.layout == DatasetLayout::kAiHub ? "quality"
                     : first.contains("label")               ? "label"
                     : first.contains("class")               ? "class"
                                                             : "label";
  NL_RETURN_IF_ERROR(store.EnsureCollection(info));
  return listing.layout == DatasetLayout::kAiHub ? store.EnsureAiHubView() : Status::OK();
}

void Uncentre(float* v, const std::vector<float>& mean) {
  if (mean.empty()) return;
  double a = 0, mm = 0;
  for (size_t k = 0; k < mean.size(); ++k) {
    a += static_cast<double>(mean[k]) * v[k];
    mm += static_cast<double>(mean[k]) * mean[k];
  }
  const double t = -a + std::sqrt(std::max(0.0, a * a + 1 - mm));
  for (size_t k = 0; k < mean.size(); ++k) v[k] = static_cast<float>(mean[k] + t * v[k]);
}

Status UpdateStoreCentre(Store& store, const ModelCard& card, std::string* what) {
  if (what) what->clear();
  if (!card.embedding.centre) return Status::OK();
  NL_ASSIGN_OR_RETURN(std::string rows_text, store.GetSetting(kCentreRowsSettingKey));
  NL_ASSIGN_OR_RETURN(int64_t rows, store.Count());
  const std::vector<float>& old_mean = card.centre_mean;
  const int64_t old_rows = std::atoll(rows_text.c_str());
  // A mean of a handful of rows is mostly those rows (one row centred on itself is zero):
  // stores that small stay uncentred, queries too.
  constexpr int64_t kMinRows = 16;
  if (rows < kMinRows || (!old_mean.empty() && rows < 2 * old_rows)) return Status::OK();
  const size_t dims = static_cast<size_t>(card.dims);
  std::vector<double> sum(dims, 0);
  int64_t n = 0, change_id = 0;
  std::vector<std::pair<int64_t, std::string>> damaged;
  std::vector<float> x(dims);
  NL_RETURN_IF_ERROR(store.ScanEmbeddings(
      [&](int64_t, const float* v) {
        x.assign(v, v + dims);
        Uncentre(x.data(), old_mean);
        for (size_t k = 0; k < dims; ++k) sum[k] += x[k];
        ++n;
        return Status::OK();
      },
      &change_id, &damaged));
  if (n == 0) return Status::OK();
  std::vector<float> mean(dims);
  for (size_t k = 0; k < dims; ++k) mean[k] = static_cast<float>(sum[k] / n);
  NL_RETURN_IF_ERROR(store.RewriteEmbeddings(
      [&](int64_t, float* v) {
        Uncentre(v, old_mean);
        double norm = 0;
        for (size_t k = 0; k < dims; ++k) {
          v[k] -= mean[k];
          norm += static_cast<double>(v[k]) * v[k];
        }
        if (norm <= 1e-12) {  // the row is the mean: keep it uncentred rather than zero
          for (size_t k = 0; k < dims; ++k) v[k] += mean[k];
          return;
        }
        const float scale = static_cast<float>(1 / std::sqrt(norm));
        for (size_t k = 0; k < dims; ++k) v[k] *= scale;
      },
      {{kCentreSettingKey, nlohmann::json(mean).dump()},
       {kCentreRowsSettingKey, std::to_string(n)}}));
  if (what) {
    *what = "centred " + std::to_string(n) + " rows on their mean" +
            (old_mean.empty() ? "" : " (the store had doubled since the last one)");
  }
  return Status::OK();
}

Result<IngestReport> Ingest(const DatasetListing& listing, Embedder& embedder, Store& store,
                            const IngestOptions& options, const ProgressFn& progress,
                            const std::atomic<bool>* stop) {
  const auto t0 = std::chrono::steady_clock::now();
  IngestReport rep;
  rep.listed = listing.items.size();
  rep.problems = listing.problems;
  NL_ASSIGN_OR_RETURN(const std::unordered_set<std::string> stored, store.AllSha256());
  std::vector<std::string> paths;
  for (const auto& it : listing.items) paths.push_back(it.image_path);

  const int threads = DefaultThreads(options.prep_threads);
  const size_t bs = static_cast<size_t>(std::max(1, options.batch_size));
  std::unordered_map<std::string, size_t> seen;  // sha256 -> first index in this run

  PrepStage prep(paths, embedder.card().preprocess, bs, threads, RingFor(embedder), &stored, true);
  WriteCounts written_counts;
  StageThread<WriteJob> writer(CommitBatches(store, progress, paths.size(), &written_counts),
                               kWriteQueue);
  // Which items of a batch to embed (called for one batch at a time, in order).
  auto select = [&](const PrepStage::Batch& batch) {
    std::vector<size_t> which;
    for (size_t i = 0; i < batch.items.size(); ++i) {
      const Prepared& p = batch.items[i];
      if (!p.status.ok()) {
        ++rep.failed;
        rep.problems.push_back({paths[p.index], p.status.message()});
      } else if (p.already_stored) {
        ++rep.already_stored;
      } else if (auto [it, fresh] = seen.emplace(p.sha256, p.index); !fresh) {
        ++rep.duplicates;
        rep.problems.push_back(
            {paths[p.index],
             "same content as " + listing.items[it->second].relative_path + ", skipped"});
      } else {
        which.push_back(i);
      }
    }
    return which;
  };
  const size_t dims = embedder.floats_per_image();
  auto hand_on = [&](PrepStage::Batch& batch, const std::vector<size_t>& which,
                     std::vector<float>& vecs, const std::vector<Status>&) {
    std::vector<NewItem> rows;
    for (size_t j = 0; j < which.size(); ++j) {
      Prepared& p = batch.items[which[j]];
      rows.push_back(RowOf(listing.items[p.index], p, vecs, j, dims));
    }
    const size_t done = std::min((batch.number + 1) * bs, paths.size());
    prep.Release(batch);
    return writer.Push({std::move(rows), done});
  };
  LaneScheduler lanes(prep, embedder, select, hand_on, stop, /*halt_on_error=*/true);
  Status failure = lanes.Run();
  rep.interrupted = lanes.interrupted();
  rep.embed_seconds = lanes.embed_seconds();
  rep.wait_for_prepared_seconds = lanes.wait_seconds();
  prep.Stop();
  Status written = writer.Finish();
  rep.prep = prep.Seconds();
  rep.store_seconds = written_counts.seconds;
  rep.inserted = written_counts.inserted;
  rep.already_stored += written_counts.duplicates;  // another process stored them meanwhile
  NL_RETURN_IF_ERROR(written);
  NL_RETURN_IF_ERROR(failure);
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

Result<IngestReport> IngestShared(const DatasetListing& listing, Embedder& embedder, Store& store,
                                  IngestQueue& queue, const IngestOptions& options,
                                  const ProgressFn& progress, const std::atomic<bool>* stop) {
  using Clock = std::chrono::steady_clock;
  auto since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  const auto t0 = Clock::now();
  IngestReport rep;
  rep.listed = listing.items.size();
  rep.problems = listing.problems;
  if (options.job.empty()) return Status::InvalidArgument("a shared ingest needs a job name");
  NL_ASSIGN_OR_RETURN(const std::unordered_set<std::string> stored, store.AllSha256());
  std::unordered_map<std::string, size_t> by_path;
  std::vector<std::string> relative;
  for (size_t i = 0; i < listing.items.size(); ++i) {
    by_path.emplace(listing.items[i].relative_path, i);
    relative.push_back(listing.items[i].relative_path);
  }
  auto tq = Clock::now();
  NL_RETURN_IF_ERROR(queue.Enqueue(options.job, relative).status());
  rep.store_seconds += since(tq);

  const int threads = DefaultThreads(options.prep_threads);
  const size_t bs = static_cast<size_t>(std::max(1, options.batch_size));
  size_t processed = 0;
  int lost_in_a_row = 0;
  for (;;) {
    if (stop && stop->load()) {
      rep.interrupted = true;
      break;
    }
    tq = Clock::now();
    auto claimed = queue.Claim(options.job, bs, options.lease_seconds);
    rep.store_seconds += since(tq);
    if (!claimed.ok()) {
      // The database restarting, or a connection lost: try again a few times, then give up
      // (committed batches stay; the same command resumes).
      if (claimed.status().code() != Status::Code::kIOError || ++lost_in_a_row > 30) {
        return claimed.status();
      }
      std::this_thread::sleep_for(std::chrono::seconds(1));
      continue;
    }
    if (claimed->empty()) {
      NL_ASSIGN_OR_RETURN(QueueCounts counts, queue.Counts(options.job));
      if (counts.pending == 0) break;
      // Other workers hold the rest. If one dies its claim comes back, and we take it.
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    ClaimOutcome claim;
    Status st = EmbedClaim(*claimed, listing, by_path, stored, embedder, threads, &rep, &claim);
    if (!st.ok()) {
      queue.Abandon();
      return st;
    }
    tq = Clock::now();
    auto ins = queue.Complete(options.job, claim.rows, claim.done, claim.failed);
    rep.store_seconds += since(tq);
    if (!ins.ok()) {
      if (ins.status().code() != Status::Code::kIOError || ++lost_in_a_row > 30) {
        return ins.status();
      }
      ++rep.abandoned_batches;  // the lease ran out or the database went away: redone later
      std::this_thread::sleep_for(std::chrono::seconds(1));
      continue;
    }
    lost_in_a_row = 0;
    ++rep.batches;
    rep.inserted += ins->inserted;
    rep.already_stored += ins->duplicates;  // another worker stored the same content
    processed += claimed->size();
    if (progress) progress(std::min(processed, rep.listed), rep.listed);
  }
  rep.seconds = since(t0);
  return rep;
}

std::vector<EmbeddedFile> EmbedFiles(const std::vector<std::string>& paths, Embedder& embedder,
                                     int prep_threads) {
  std::vector<EmbeddedFile> out;
  out.reserve(paths.size());
  // The sink never fails and nothing stops the run, so every file comes back.
  (void)EmbedFilesStreaming(
      paths, embedder,
      [&out](EmbeddedFile& f) {
        out.push_back(std::move(f));
        return Status::OK();
      },
      nullptr, prep_threads);
  return out;
}

Result<EmbedStreamReport> EmbedFilesStreaming(const std::vector<std::string>& paths,
                                              Embedder& embedder, const EmbeddedFileSink& sink,
                                              const std::atomic<bool>* stop, int prep_threads) {
  EmbedStreamReport rep;
  // Batches as ingest's (IngestOptions::batch_size), so the two run at the same rate.
  const size_t bs = static_cast<size_t>(std::max(IngestOptions{}.batch_size, embedder.max_batch()));
  PrepStage prep(paths, embedder.card().preprocess, bs, DefaultThreads(prep_threads),
                 RingFor(embedder), nullptr, false);
  size_t delivered = 0;
  StageThread<std::vector<EmbeddedFile>> out(
      [&sink, &delivered](std::vector<EmbeddedFile>& batch) -> Status {
        for (EmbeddedFile& f : batch) {
          NL_RETURN_IF_ERROR(sink(f));
          ++delivered;
        }
        return Status::OK();
      },
      kWriteQueue);
  auto select = [](const PrepStage::Batch& b) {
    std::vector<size_t> which;
    for (size_t i = 0; i < b.items.size(); ++i) {
      if (b.items[i].status.ok()) which.push_back(i);
    }
    return which;
  };
  const size_t dims = embedder.floats_per_image();
  auto hand_on = [&](PrepStage::Batch& b, const std::vector<size_t>& which,
                     std::vector<float>& vecs, const std::vector<Status>& errors) {
    std::vector<EmbeddedFile> batch(b.items.size());
    for (size_t i = 0; i < b.items.size(); ++i) {
      batch[i].path = paths[b.items[i].index];
      batch[i].status = b.items[i].status;
      batch[i].sha256 = b.items[i].sha256;
    }
    for (size_t j = 0; j < which.size(); ++j) {
      EmbeddedFile& f = batch[which[j]];
      f.status = errors[j];
      if (f.status.ok()) f.embedding.assign(vecs.begin() + j * dims, vecs.begin() + (j + 1) * dims);
    }
    prep.Release(b);
    return out.Push(std::move(batch));
  };
  LaneScheduler lanes(prep, embedder, select, hand_on, stop, /*halt_on_error=*/false);
  NL_RETURN_IF_ERROR(lanes.Run());  // OK: embedder errors are the files' own
  rep.interrupted = lanes.interrupted();
  prep.Stop();
  Status st = out.Finish();
  rep.delivered = delivered;
  NL_RETURN_IF_ERROR(st);
  return rep;
}

}  // namespace nearlabel
