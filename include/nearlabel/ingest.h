// Ingest: dataset listing -> read + checksum -> decode + preprocess -> embed -> store.
//
// Threading (a three-stage pipeline, see ARCHITECTURE.md): `prep_threads` workers read, hash,
// decode and preprocess images in listing order into a ring of batch buffers (2 + one per
// embedder lane); each lane of the embedder (Embedder::lanes, one per ONNX Runtime session)
// embeds the next images on its own thread, the calling thread's being one, so that no lane
// waits for another at the end of a batch; a writer thread commits each batch, in order, in
// one transaction. Memory is bounded by the ring, not the dataset. Items already in the store
// (same sha256) are skipped before decoding, which makes a re-run after a crash or Ctrl-C
// resume where it stopped.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "nearlabel/dataset.h"
#include "nearlabel/model.h"
#include "nearlabel/store.h"

namespace nearlabel {

struct IngestOptions {
  int batch_size = 32;   // images per embedding batch and per transaction
  int prep_threads = 0;  // 0: the number of cores
  // Shared stores (IngestShared): the job name the dataset's listing is queued under, and how
  // long a claimed batch may stay open before the database aborts it and frees its images.
  std::string job;
  int lease_seconds = 300;
};

struct IngestReport {
  size_t listed = 0;          // images the dataset listed
  size_t inserted = 0;        // new rows
  size_t already_stored = 0;  // skipped: same content already in the store
  size_t duplicates = 0;      // skipped: same content as another image of this run
  size_t failed = 0;          // images that could not be read or decoded
  bool interrupted = false;   // stopped early by the stop flag; re-run to finish
  double seconds = 0;
  std::vector<DatasetProblem> problems;  // dataset problems first, then per-image failures
  // Where the time went: embedding (the main thread's wall seconds in the embedder), and the
  // database (Ingest: the writer thread's insert + commit, which overlaps embedding;
  // IngestShared: claim, insert, commit).
  double embed_seconds = 0;
  double store_seconds = 0;
  // Ingest only: the preparation workers' CPU seconds per step, summed over the workers (they
  // run beside each other and beside inference), and the main thread's wait for prepared batches
  // (inference idle because preparation is behind).
  struct PrepSeconds {
    double read = 0, sha256 = 0, decode = 0, preprocess = 0, thumbnail = 0;
  } prep;
  double wait_for_prepared_seconds = 0;
  size_t batches = 0;            // batches this worker committed
  size_t abandoned_batches = 0;  // claims lost (connection or lease); others redo them
};

// Called after each committed batch with (images done, images listed). May be empty.
using ProgressFn = std::function<void(size_t done, size_t total)>;

// Records in `store` the collection info an ingest of `listing` with `card` (its ONNX file's
// sha256 `model_sha256`) needs: model, checksum, dims, and the label field classify and eval
// predict unless told otherwise (AI Hub: quality; else label or class); for AI Hub datasets
// also the label view; and card.embedding, the options every later image for this store is
// embedded with. Mismatch when the store holds another model or options. `listing` not empty.
Status PrepareStoreForDataset(Store& store, const ModelCard& card, const std::string& model_sha256,
                              const DatasetListing& listing);

// For a store made with the "centre" embedding option (`card`, as ModelOfStore or
// CardWithStoreOptions give it): computes the mean of the rows' uncentred vectors and
// rewrites every row centred on it (Store::RewriteEmbeddings, one transaction) when the
// store has no mean yet (and at least 16 rows) or has at least doubled since it was
// computed; nothing otherwise,
// so that the mean follows the data at a cost that stays in proportion to the ingests.
// *what (optional) says what was done, "" when nothing. Call after each ingest; a query
// embedder made before a recentring must be made again (ModelOfStore).
Status UpdateStoreCentre(Store& store, const ModelCard& card, std::string* what);

// The uncentred unit vector whose centring on `mean` gave the unit vector `v` (in place):
// v' = mean + t v with t > 0 such that |v'| = 1 (a mean of unit vectors has |mean| < 1).
void Uncentre(float* v, const std::vector<float>& mean);

// Ingests `listing` into `store` (whose collection must match `embedder`'s model; call
// PrepareStoreForDataset or Store::EnsureCollection first). Stops cleanly after the current batch
// when *stop becomes true. A store error aborts with that error; rows of committed batches stay.
Result<IngestReport> Ingest(const DatasetListing& listing, Embedder& embedder, Store& store,
                            const IngestOptions& options, const ProgressFn& progress,
                            const std::atomic<bool>* stop);

// Ingests `listing` into a shared store through its job queue, alongside any number of other
// workers running the same command on the same dataset (a shared file system or identical
// copies: jobs are keyed by relative path). The listing is queued under options.job; then
// this worker claims a batch of pending images at a time, prepares and embeds them, and
// stores the rows and marks the jobs done in one transaction. Returns when no job is pending
// (jobs other workers hold are waited for, so a worker that dies leaves nothing undone). The
// report counts this worker's share. `queue` is the store's (Store::ingest_queue()).
Result<IngestReport> IngestShared(const DatasetListing& listing, Embedder& embedder, Store& store,
                                  IngestQueue& queue, const IngestOptions& options,
                                  const ProgressFn& progress, const std::atomic<bool>* stop);

// One embedded image file (for classify and search).
struct EmbeddedFile {
  std::string path;
  Status status;  // why it failed, if it did
  std::string sha256;
  std::vector<float> embedding;  // floats_per_image() floats when status is OK
};

// Reads, decodes, preprocesses and embeds `paths` in batches (the ingest pipeline's prepare
// stage feeding the embedder), results in input order. Per-file failures are reported in the
// results, not as an error. `prep_threads` 0: one per core.
std::vector<EmbeddedFile> EmbedFiles(const std::vector<std::string>& paths, Embedder& embedder,
                                     int prep_threads = 0);

// Receives each embedded file (a failed one with its status), in input order, on one thread
// that is neither the caller's nor a decoder's. An error it returns stops the run.
using EmbeddedFileSink = std::function<Status(EmbeddedFile& file)>;

struct EmbedStreamReport {
  size_t delivered = 0;      // files handed to the sink (failed ones included)
  bool interrupted = false;  // *stop became true before every file was delivered
};

// EmbedFiles for any number of files: Ingest's pipeline (decoders -> the embedder's lanes,
// the calling thread's one of them), with each batch handed to `sink` on its own thread while
// the next one is embedded,
// so a search per image costs no embedding time. Memory is bounded by a few batches whatever
// paths.size(). When *stop becomes true, the batches already embedded are delivered and the
// run ends (report.interrupted). Returns the sink's first error.
Result<EmbedStreamReport> EmbedFilesStreaming(const std::vector<std::string>& paths,
                                              Embedder& embedder, const EmbeddedFileSink& sink,
                                              const std::atomic<bool>* stop, int prep_threads = 0);

}  // namespace nearlabel
