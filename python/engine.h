// The Python module's C++ side, free of Python: images given as paths, encoded bytes or
// decoded pixels, embedded with a pool of embedders (one per concurrent call), classified
// through a Collection. The bindings (nearlabel_module.cc) convert arguments and results and
// release the GIL around everything here.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "nearlabel/collection.h"
#include "nearlabel/model.h"

namespace nearlabel::python {

// One image as the caller gave it.
struct ImageInput {
  enum class Kind { kPath, kBytes, kPixels };
  Kind kind = Kind::kPath;
  std::string data;  // the path (kPath) or the encoded file (kBytes)
  cv::Mat bgr;       // kPixels: 8-bit BGR, owned
  std::string name;  // what results call it: the path, "<bytes 0>", "<array 0>"
};

// Embedders of one model card, lent one per concurrent call: an Embedder is used by one
// thread at a time, so two Python threads classifying at once each get their own (the
// second one created on first need, then kept). Thread-safe.
class EmbedderPool {
 public:
  explicit EmbedderPool(ModelCard card) : card_(std::move(card)) {}
  const ModelCard& card() const { return card_; }

  class Lease {
   public:
    Lease(EmbedderPool* pool, std::unique_ptr<Embedder> e, bool many)
        : pool_(pool), e_(std::move(e)), many_(many) {}
    Lease(Lease&&) = default;
    ~Lease() {
      if (e_) pool_->Return(std::move(e_), many_);
    }
    Embedder& operator*() const { return *e_; }
    Embedder* operator->() const { return e_.get(); }

   private:
    EmbedderPool* pool_;
    std::unique_ptr<Embedder> e_;
    bool many_;
  };
  // `many`: more than a handful of images (one single-thread session per core, as ingest;
  // else one session on every core, as classify of one image).
  Result<Lease> Acquire(bool many);

 private:
  void Return(std::unique_ptr<Embedder> e, bool many);
  ModelCard card_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Embedder>> free_few_, free_many_;
};

// Calls `fn(i, status, vector)` for every input in order: its embedding (floats_per_image()
// floats) or why it failed. Paths go through the ingest pipeline (EmbedFilesStreaming: all
// cores, bounded memory), bytes and pixels are decoded and preprocessed here in batches.
// Stops early, with that error, when `fn` fails; when *stop becomes true it stops after the
// batch in flight (report via *interrupted).
Status EmbedInputs(const std::vector<ImageInput>& inputs, Embedder& embedder,
                   const std::function<Status(size_t, const Status&, const float*)>& fn,
                   const std::atomic<bool>* stop, bool* interrupted);

// Classifies every input against `collection` (a failed image keeps its status).
struct ImageAnswer {
  std::string image;
  Status status;
  Collection::Classified classified;
};
struct ClassifyRequest {
  QueryOptions query;
  std::string label_field;
  Vote vote = Vote::kMajority;
  const RejectThresholds* reject = nullptr;
  const Calibration* calibration = nullptr;  // null: the vote's share is the confidence
};
Result<std::vector<ImageAnswer>> ClassifyInputs(const Collection& collection, Embedder& embedder,
                                                const std::vector<ImageInput>& inputs,
                                                const ClassifyRequest& request,
                                                const std::atomic<bool>* stop, bool* interrupted);

}  // namespace nearlabel::python
