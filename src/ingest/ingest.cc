#include "nearlabel/ingest.h"

#include <algorithm>
#include <chrono>
#include <future>
#include <thread>
#include <unordered_map>

#include "common/fs.h"
#include "common/sha256.h"
#include "nearlabel/image.h"

namespace nearlabel {
namespace {

// One image after the preparation stage.
struct Prepared {
  size_t index = 0;  // into the input list
  Status status;
  std::string sha256;
  bool already_stored = false;
};

// A batch of prepared images; tensor holds one 3xHxW slot per item (slot i for item i).
struct Batch {
  std::vector<Prepared> items;
  std::vector<float> tensor;
};

int DefaultThreads(int requested) {
  if (requested > 0) return requested;
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

// Reads, hashes, decodes and preprocesses paths[begin, end) on `threads` threads.
// Items whose sha256 is in `skip` are not decoded.
Batch PrepareBatch(const std::vector<std::string>& paths, size_t begin, size_t end,
                   const PreprocessSpec& spec, int threads,
                   const std::unordered_set<std::string>* skip) {
  Batch b;
  const size_t n = end - begin;
  const size_t slot = static_cast<size_t>(3) * spec.width * spec.height;
  b.items.resize(n);
  b.tensor.resize(n * slot);
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < n;) {
      Prepared& p = b.items[i];
      p.index = begin + i;
      auto bytes = ReadFileToString(paths[p.index], 1ull << 30);
      if (!bytes.ok()) {
        p.status = bytes.status();
        continue;
      }
      p.sha256 = Sha256Hex(*bytes);
      if (skip && skip->count(p.sha256)) {
        p.already_stored = true;
        continue;
      }
      auto img = DecodeImage(*bytes);
      if (!img.ok()) {
        p.status = img.status();
        continue;
      }
      PreprocessInto(*img, spec, b.tensor.data() + i * slot);
    }
  };
  const int t = std::min<int>(threads, static_cast<int>(n));
  std::vector<std::thread> pool;
  for (int i = 1; i < t; ++i) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  return b;
}

// Embeds the OK, not-skipped items of `b` (packing their slots densely), in chunks of the
// embedder's max batch. Writes vectors for those items into `out` (index into b.items).
Status EmbedBatch(Batch& b, Embedder& embedder, const std::vector<size_t>& which,
                  std::vector<std::vector<float>>* out) {
  const auto& spec = embedder.card().preprocess;
  const size_t slot = static_cast<size_t>(3) * spec.width * spec.height;
  const int dims = embedder.dims();
  // Pack selected slots to the front, in order (slot i only ever moves down).
  for (size_t j = 0; j < which.size(); ++j) {
    if (which[j] != j) {
      std::copy(b.tensor.begin() + which[j] * slot, b.tensor.begin() + (which[j] + 1) * slot,
                b.tensor.begin() + j * slot);
    }
  }
  out->assign(b.items.size(), {});
  std::vector<float> vecs(which.size() * dims);
  const size_t step = static_cast<size_t>(embedder.max_batch());
  for (size_t j = 0; j < which.size(); j += step) {
    const size_t c = std::min(step, which.size() - j);
    NL_RETURN_IF_ERROR(
        embedder.Embed(b.tensor.data() + j * slot, static_cast<int>(c), vecs.data() + j * dims));
  }
  for (size_t j = 0; j < which.size(); ++j) {
    (*out)[which[j]].assign(vecs.begin() + j * dims, vecs.begin() + (j + 1) * dims);
  }
  return Status::OK();
}

std::string DumpJson(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

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
  const PreprocessSpec spec = embedder.card().preprocess;
  std::unordered_map<std::string, size_t> seen;  // sha256 -> first index in this run

  auto prepare = [&](size_t begin) {
    return PrepareBatch(paths, begin, std::min(begin + bs, paths.size()), spec, threads, &stored);
  };
  std::future<Batch> next;
  if (!paths.empty()) next = std::async(std::launch::async, prepare, 0);
  for (size_t begin = 0; begin < paths.size(); begin += bs) {
    Batch batch = next.get();
    if (begin + bs < paths.size()) next = std::async(std::launch::async, prepare, begin + bs);
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
    std::vector<std::vector<float>> vecs;
    Status st = EmbedBatch(batch, embedder, which, &vecs);
    if (!st.ok()) {
      if (next.valid()) next.wait();
      return st;
    }
    std::vector<NewItem> rows;
    for (size_t i : which) {
      const Prepared& p = batch.items[i];
      const DatasetItem& item = listing.items[p.index];
      rows.push_back({item.image_path, p.sha256, DumpJson(item.metadata), std::move(vecs[i])});
    }
    if (!rows.empty()) {
      auto ins = store.InsertBatch(rows);
      if (!ins.ok()) {
        if (next.valid()) next.wait();
        return ins.status();
      }
      rep.inserted += ins->inserted;
      rep.already_stored += ins->duplicates;  // another process stored them meanwhile
    }
    if (progress) progress(std::min(begin + bs, paths.size()), paths.size());
    if (stop && stop->load()) {
      rep.interrupted = begin + bs < paths.size();
      if (next.valid()) next.wait();
      break;
    }
  }
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

std::vector<EmbeddedFile> EmbedFiles(const std::vector<std::string>& paths, Embedder& embedder,
                                     int prep_threads) {
  std::vector<EmbeddedFile> out(paths.size());
  const size_t bs = static_cast<size_t>(std::max(1, embedder.max_batch()));
  const int threads = DefaultThreads(prep_threads);
  for (size_t begin = 0; begin < paths.size(); begin += bs) {
    Batch b = PrepareBatch(paths, begin, std::min(begin + bs, paths.size()),
                           embedder.card().preprocess, threads, nullptr);
    std::vector<size_t> which;
    for (size_t i = 0; i < b.items.size(); ++i) {
      EmbeddedFile& f = out[b.items[i].index];
      f.path = paths[b.items[i].index];
      f.status = b.items[i].status;
      f.sha256 = b.items[i].sha256;
      if (f.status.ok()) which.push_back(i);
    }
    std::vector<std::vector<float>> vecs;
    Status st = EmbedBatch(b, embedder, which, &vecs);
    for (size_t i : which) {
      EmbeddedFile& f = out[b.items[i].index];
      if (!st.ok()) {
        f.status = st;
      } else {
        f.embedding = std::move(vecs[i]);
      }
    }
  }
  return out;
}

}  // namespace nearlabel
