// Batch image commands' inputs and outputs (cli/batch.h).
#include "cli/batch.h"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>

#include "cli/cli.h"
#include "common/fs.h"

using nlohmann::json;

namespace nearlabel::cli {
namespace {

std::atomic<bool> g_batch_stop{false};

// Appends the lines of `in` (a --from list) to `paths`: one path per line, CR stripped,
// blank lines skipped, nothing else interpreted (a path may hold spaces or commas).
void ReadPathLines(std::istream& in, std::vector<std::string>* paths) {
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) paths->push_back(line);
  }
}

// RFC 4180 field: quoted when it holds a separator, a quote or a line break.
std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string JsonText(const json& v) {
  if (v.is_null()) return "";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_float()) return FormatDouble(v.get<double>(), 6);
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string Field(const json& r, const char* key) {
  auto it = r.find(key);
  return it == r.end() ? "" : JsonText(*it);
}

}  // namespace

void AddBatchOptions(CLI::App* cmd, BatchArgs* args, const std::string& what) {
  cmd->add_option("images", args->images,
                  "Image files, or directories (walked recursively: image files only, hidden "
                  "entries skipped)");
  cmd->add_option("--from", args->from,
                  "A file listing one image path per line (\"-\": standard input); may repeat")
      ->type_name("LIST")
      ->allow_extra_args(false);  // one list per --from: `--from - photo.jpg` leaves photo.jpg
                                  // an image
  cmd->add_option("--out", args->out,
                  "Write one row per image to FILE.csv or FILE.jsonl as each is " + what +
                      " (with a progress bar on a terminal) instead of printing")
      ->type_name("FILE");
}

Result<ImageFileList> ListBatchImages(const BatchArgs& args) {
  std::vector<std::string> named = args.images;
  for (const std::string& list : args.from) {
    if (list == "-") {
      ReadPathLines(std::cin, &named);
      continue;
    }
    std::ifstream in(list);
    if (!in) {
      return Status::NotFound("--from " + list + ": cannot read: " + std::strerror(errno));
    }
    ReadPathLines(in, &named);
  }
  if (named.empty()) {
    return Status::InvalidArgument(
        "no images given: name image files or directories, or a list with --from");
  }
  ImageFileList list = ListImageFiles(named);
  if (list.paths.empty() && list.problems.empty()) {
    return Status::NotFound("no image files (.jpg .jpeg .png .bmp .tif .tiff .webp) in " +
                            named.front() + (named.size() > 1 ? " and the rest" : ""));
  }
  return list;
}

// ---------------------------------------------------------------- BatchWriter
Result<BatchWriter> BatchWriter::Open(const std::string& out, const std::string& store,
                                      BatchKind kind, int k, bool json_array) {
  BatchWriter w;
  w.out_ = out;
  w.kind_ = kind;
  w.k_ = k;
  w.json_array_ = json_array;
  if (out.empty()) {
    if (json_array) std::printf("[");
    return w;
  }
  const std::string ext = LowerExtension(out);
  if (ext != "csv" && ext != "jsonl") {
    return Status::InvalidArgument("--out " + out +
                                   ": the results file must end in .csv or .jsonl (nothing "
                                   "was written)");
  }
  std::error_code ec;
  if (std::filesystem::equivalent(out, store, ec)) {
    return Status::InvalidArgument("--out " + out + " is the store; give another file");
  }
  w.jsonl_ = ext == "jsonl";
  w.file_ = std::fopen(out.c_str(), "w");
  if (!w.file_) {
    return Status::IOError("--out " + out + ": cannot create: " + std::strerror(errno));
  }
  if (!w.jsonl_) std::fputs(w.CsvHeader().c_str(), w.file_);
  return w;
}

BatchWriter::BatchWriter(BatchWriter&& o) noexcept
    : out_(std::move(o.out_)),
      kind_(o.kind_),
      k_(o.k_),
      jsonl_(o.jsonl_),
      json_array_(o.json_array_),
      written_(o.written_),
      file_(o.file_) {
  o.file_ = nullptr;
}

BatchWriter::~BatchWriter() {
  if (file_) std::fclose(file_);
}

std::string BatchWriter::CsvHeader() const {
  std::string h = "image";
  switch (kind_) {
    case BatchKind::kClassify:
      h += ",label,confidence,unknown,error";
      break;
    case BatchKind::kSearch:
      h += ",error";
      break;
    case BatchKind::kAnomaly:
      return h + ",score,threshold,verdict,heatmap,error\n";
  }
  for (int i = 1; i <= k_; ++i) {
    const std::string n = "n" + std::to_string(i) + "_";
    h += "," + n + "id," + n + "label," + n + "distance";
    if (kind_ == BatchKind::kSearch) h += "," + n + "source";
  }
  return h + "\n";
}

std::string BatchWriter::CsvRow(const json& r) const {
  std::vector<std::string> f{Field(r, "image")};
  if (kind_ == BatchKind::kAnomaly) {
    for (const char* key : {"score", "threshold", "verdict", "heatmap", "error"}) {
      f.push_back(Field(r, key));
    }
  } else {
    if (kind_ == BatchKind::kClassify) {
      f.push_back(Field(r, "label"));
      f.push_back(r.contains("confidence") ? Field(r, "confidence") : "");
      f.push_back(r.contains("unknown") ? (r["unknown"].get<bool>() ? "1" : "0") : "");
    }
    f.push_back(Field(r, "error"));
    const json empty = json::array();
    const json& nbs = r.contains("neighbors") ? r["neighbors"] : empty;
    for (int i = 0; i < k_; ++i) {
      const bool has = i < static_cast<int>(nbs.size());
      for (const char* key : {"id", "label", "distance", "source"}) {
        if (kind_ != BatchKind::kSearch && std::strcmp(key, "source") == 0) continue;
        f.push_back(has ? Field(nbs[i], key) : "");
      }
    }
  }
  std::string line;
  for (size_t i = 0; i < f.size(); ++i) line += (i ? "," : "") + CsvField(f[i]);
  return line + "\n";
}

Status BatchWriter::Write(const json& record) {
  if (file_) {
    const std::string line =
        jsonl_ ? record.dump(-1, ' ', false, json::error_handler_t::replace) + "\n"
               : CsvRow(record);
    if (std::fwrite(line.data(), 1, line.size(), file_) != line.size()) {
      return Status::IOError("--out " + out_ + ": write failed: " + std::strerror(errno));
    }
  } else if (json_array_) {
    std::printf("%s\n  %s", written_ ? "," : "",
                record.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
  }
  ++written_;
  return Status::OK();
}

Status BatchWriter::Close() {
  if (!file_) {
    if (json_array_) std::printf("%s]\n", written_ ? "\n" : "");
    std::fflush(stdout);
    return Status::OK();
  }
  const bool ok = std::fflush(file_) == 0 && std::ferror(file_) == 0;
  const int err = errno;
  const bool closed = std::fclose(file_) == 0;
  file_ = nullptr;
  if (!ok || !closed) {
    return Status::IOError("--out " + out_ + ": write failed: " + std::strerror(err) +
                           " (the file holds the rows written before)");
  }
  return Status::OK();
}

// ---------------------------------------------------------------- RunBatch
int RunBatch(const ImageFileList& list, Embedder& embedder, BatchWriter& writer, const char* what,
             const std::function<Result<json>(EmbeddedFile&)>& answer, BatchSummary* summary) {
  BatchSummary& s = *summary;
  s = BatchSummary{};
  s.listed = list.paths.size();
  ProgressBar bar(what);
  const bool show_bar = writer.to_file();
  auto report_problem = [&](const std::string& path, const std::string& reason) -> Status {
    if (show_bar) bar.Clear();
    std::fprintf(stderr, "nearlabel: error: %s: %s\n", TerminalSafe(path).c_str(),
                 TerminalSafe(reason).c_str());
    ++s.problems;
    return writer.Write({{"image", path}, {"error", reason}});
  };
  for (const DatasetProblem& p : list.skipped) {
    std::fprintf(stderr, "nearlabel: notice: %s: %s\n", TerminalSafe(p.path).c_str(),
                 TerminalSafe(p.reason).c_str());
  }
  for (const DatasetProblem& p : list.problems) {
    Status st = report_problem(p.path, p.reason);
    if (!st.ok()) return Fail(st);
  }
  g_batch_stop = false;
  std::signal(SIGINT, [](int) {
    g_batch_stop = true;
    std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C kills at once
  });
  std::signal(SIGTERM, [](int) { g_batch_stop = true; });
  size_t done = 0;
  auto sink = [&](EmbeddedFile& f) -> Status {
    ++done;
    Status st;
    if (!f.status.ok()) {
      st = report_problem(f.path, f.status.message());
    } else {
      NL_ASSIGN_OR_RETURN(json record, answer(f));
      record["image"] = f.path;
      st = writer.Write(record);
      ++s.answered;
    }
    if (show_bar) bar.Update(done, list.paths.size());
    return st;
  };
  auto rep = EmbedFilesStreaming(list.paths, embedder, sink, &g_batch_stop);
  bar.Finish();
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  const bool to_file = writer.to_file();
  Status closed = writer.Close();
  if (!rep.ok()) return Fail(rep.status());
  if (!closed.ok()) return Fail(closed);
  s.interrupted = rep->interrupted;
  if (s.interrupted) {
    std::fprintf(stderr,
                 "nearlabel: interrupted after %zu of %zu images%s%s; run again to do the rest\n",
                 done, list.paths.size(), to_file ? ": every one of them is in " : "",
                 to_file ? writer.path().c_str() : "");
  } else if (to_file) {
    std::fprintf(stderr, "nearlabel: %zu of %zu images answered, %zu problem%s; results in %s\n",
                 s.answered, s.listed, s.problems, s.problems == 1 ? "" : "s",
                 writer.path().c_str());
  } else if (s.problems > 0) {
    std::fprintf(stderr, "nearlabel: %zu of %zu images answered, %zu problem%s (listed above)\n",
                 s.answered, s.listed, s.problems, s.problems == 1 ? "" : "s");
  }
  return s.problems > 0 || s.interrupted ? 1 : 0;
}

}  // namespace nearlabel::cli
