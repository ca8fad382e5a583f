#include "engine.h"

#include <algorithm>
#include <thread>

#include "nearlabel/image.h"
#include "nearlabel/ingest.h"

namespace nearlabel::python {

Result<EmbedderPool::Lease> EmbedderPool::Acquire(bool many) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto& free = many ? free_many_ : free_few_;
    if (!free.empty()) {
      std::unique_ptr<Embedder> e = std::move(free.back());
      free.pop_back();
      return Lease(this, std::move(e), many);
    }
  }
  EmbedderOptions opt;
  opt.sessions = many ? 0 : 1;
  std::string notice;  // the ONNX Runtime fallback notice: the backend() says which ran
  NL_ASSIGN_OR_RETURN(std::unique_ptr<Embedder> e, CreateEmbedder(card_, opt, &notice));
  return Lease(this, std::move(e), many);
}

void EmbedderPool::Return(std::unique_ptr<Embedder> e, bool many) {
  std::lock_guard<std::mutex> lock(mu_);
  (many ? free_many_ : free_few_).push_back(std::move(e));
}

namespace {

// Decodes (bytes) or takes (pixels) the in-memory inputs `which` and embeds them in
// batches of the embedder's size, decoding on every core.
Status EmbedInMemory(const std::vector<ImageInput>& inputs, const std::vector<size_t>& which,
                     Embedder& embedder,
                     const std::function<Status(size_t, const Status&, const float*)>& fn) {
  const PreprocessSpec& spec = embedder.card().preprocess;
  const size_t slot = static_cast<size_t>(3) * spec.width * spec.height;
  const size_t dims = embedder.floats_per_image();
  const size_t bs = static_cast<size_t>(std::max(1, embedder.max_batch()));
  std::vector<float> tensor, out;
  for (size_t at = 0; at < which.size(); at += bs) {
    const size_t n = std::min(bs, which.size() - at);
    tensor.assign(n * slot, 0.f);
    std::vector<Status> status(n);
    auto prepare = [&](size_t j) {
      const ImageInput& in = inputs[which[at + j]];
      cv::Mat img = in.bgr;
      if (in.kind == ImageInput::Kind::kBytes) {
        auto decoded = DecodeImage(in.data);
        if (!decoded.ok()) {
          status[j] = decoded.status();
          return;
        }
        img = std::move(*decoded);
      }
      PreprocessInto(img, spec, tensor.data() + j * slot);
    };
    std::vector<std::thread> threads;
    const size_t t = std::min<size_t>(n, std::max(1u, std::thread::hardware_concurrency()));
    for (size_t w = 0; w < t; ++w) {
      threads.emplace_back([&, w] {
        for (size_t j = w; j < n; j += t) prepare(j);
      });
    }
    for (auto& th : threads) th.join();
    // Embed the good ones packed together, then hand out every result in order.
    std::vector<size_t> good;
    for (size_t j = 0; j < n; ++j) {
      if (!status[j].ok()) continue;
      if (good.size() != j) {
        std::copy_n(tensor.begin() + j * slot, slot, tensor.begin() + good.size() * slot);
      }
      good.push_back(j);
    }
    out.assign(good.size() * dims, 0.f);
    Status embedded =
        good.empty() ? Status::OK()
                     : embedder.Embed(tensor.data(), static_cast<int>(good.size()), out.data());
    size_t g = 0;
    for (size_t j = 0; j < n; ++j) {
      const bool ok = status[j].ok();
      const Status& st = ok ? embedded : status[j];
      NL_RETURN_IF_ERROR(
          fn(which[at + j], st, ok && embedded.ok() ? out.data() + (g++) * dims : nullptr));
    }
  }
  return Status::OK();
}

}  // namespace

Status EmbedInputs(const std::vector<ImageInput>& inputs, Embedder& embedder,
                   const std::function<Status(size_t, const Status&, const float*)>& fn,
                   const std::atomic<bool>* stop, bool* interrupted) {
  *interrupted = false;
  std::vector<std::string> paths;
  std::vector<size_t> path_index, memory_index;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].kind == ImageInput::Kind::kPath) {
      paths.push_back(inputs[i].data);
      path_index.push_back(i);
    } else {
      memory_index.push_back(i);
    }
  }
  if (!paths.empty()) {
    size_t next = 0;
    auto sink = [&](EmbeddedFile& f) {
      const size_t i = path_index[next++];
      return fn(i, f.status, f.status.ok() ? f.embedding.data() : nullptr);
    };
    NL_ASSIGN_OR_RETURN(EmbedStreamReport rep, EmbedFilesStreaming(paths, embedder, sink, stop));
    *interrupted = rep.interrupted;
    if (rep.interrupted) return Status::OK();
  }
  return EmbedInMemory(inputs, memory_index, embedder, fn);
}

Result<std::vector<ImageAnswer>> ClassifyInputs(const Collection& collection, Embedder& embedder,
                                                const std::vector<ImageInput>& inputs,
                                                const ClassifyRequest& request,
                                                const std::atomic<bool>* stop, bool* interrupted) {
  std::vector<ImageAnswer> answers(inputs.size());
  auto fn = [&](size_t i, const Status& st, const float* v) -> Status {
    ImageAnswer& a = answers[i];
    a.image = inputs[i].name;
    a.status = st;
    if (!st.ok()) return Status::OK();
    NL_ASSIGN_OR_RETURN(a.classified,
                        collection.Classify(v, request.query, request.label_field, request.vote,
                                            request.reject, request.calibration));
    return Status::OK();
  };
  NL_RETURN_IF_ERROR(EmbedInputs(inputs, embedder, fn, stop, interrupted));
  return answers;
}

}  // namespace nearlabel::python
