// Batch image commands (classify, search, anomaly score): which images, and where the results
// go. Images come from arguments (files or directories) and --from lists; results are
// streamed, one record per image as it is answered, to a .csv or .jsonl file (--out), as one
// JSON array on stdout (--json), or as text. A failed image is a record with an "error"
// field and one line on stderr; the run goes on. Ctrl-C stops after the batch in flight and
// leaves whole records only.
#pragma once

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "nearlabel/dataset.h"
#include "nearlabel/ingest.h"
#include "nearlabel/status.h"

namespace nearlabel::cli {

struct BatchArgs {
  std::vector<std::string> images;  // files or directories
  std::vector<std::string> from;    // files of paths, one per line; "-" is stdin
  std::string out;                  // results file: .csv or .jsonl; "" for stdout
};

// Adds the positional `images` and --from / --out to `cmd`.
void AddBatchOptions(CLI::App* cmd, BatchArgs* args, const std::string& what);

// The image files `args` names, in order (directories walked, --from lists read). Problems
// (missing paths, unreadable directories) are returned for the caller to report and count.
// Fails when a --from list cannot be read, or nothing at all was named.
Result<ImageFileList> ListBatchImages(const BatchArgs& args);

// What a record's CSV row holds for each kind of command.
enum class BatchKind { kClassify, kSearch, kAnomaly };

// Streams records to --out (CSV or JSONL by extension), or to stdout as one JSON array
// (`json_array`); otherwise writes nothing (the command prints text as it answers). Every record is
// written whole and flushed per batch, so an interrupted run leaves a valid file of the records
// done.
class BatchWriter {
 public:
  // Checks the --out extension and creates (truncates) the file. `k`: neighbour columns in
  // a CSV row. Refuses to write over the store.
  static Result<BatchWriter> Open(const std::string& out, const std::string& store, BatchKind kind,
                                  int k, bool json_array);
  BatchWriter(BatchWriter&&) noexcept;
  BatchWriter& operator=(BatchWriter&&) = delete;
  ~BatchWriter();

  // `record`: {"image": path, ...answer fields} or {"image": path, "error": reason}.
  Status Write(const nlohmann::json& record);
  // Flushes, closes the array or the file; reports a write error (a full disk).
  Status Close();

  bool to_file() const { return file_ != nullptr; }
  const std::string& path() const { return out_; }

 private:
  BatchWriter() = default;
  std::string CsvHeader() const;
  std::string CsvRow(const nlohmann::json& r) const;

  std::string out_;
  BatchKind kind_ = BatchKind::kClassify;
  int k_ = 0;
  bool jsonl_ = false, json_array_ = false;
  size_t written_ = 0;
  std::FILE* file_ = nullptr;
};

// Runs `answer` over every embedded image of `list` (EmbedFilesStreaming), writing each
// record. Listing problems and failed images are written as error records and counted; a
// progress bar (`what` names the work) runs when results go to a file. SIGINT/SIGTERM stop the run
// after the batch in flight. Returns the exit code: 0 when every image was answered, 1 otherwise
// (problems, interrupted, or an error from `answer`, which stops the run).
struct BatchSummary {
  size_t listed = 0, answered = 0, problems = 0;
  bool interrupted = false;
};
int RunBatch(const ImageFileList& list, Embedder& embedder, BatchWriter& writer, const char* what,
             const std::function<Result<nlohmann::json>(EmbeddedFile&)>& answer,
             BatchSummary* summary);

}  // namespace nearlabel::cli
