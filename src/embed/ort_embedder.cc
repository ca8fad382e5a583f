// ONNX Runtime backend of Embedder. The library is loaded with dlopen (see ort_api.h for why
// and how the C API table is declared); the model is rewritten in memory so that the card's
// feature tensor is the only graph output (onnx_graph.h) and a session is created from the
// bytes.
#include <cpuid.h>
#include <dlfcn.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "common/fs.h"
#include "common/large_stack.h"
#include "embed/embedding_transform.h"
#include "embed/onnx_graph.h"
#include "embed/ort_api.h"
#include "embed/pooling.h"
#include "nearlabel/model.h"

#ifndef NEARLABEL_ORT_LIB
#define NEARLABEL_ORT_LIB ""
#endif

namespace nearlabel {
namespace {

using namespace ort;  // NOLINT: the C API's own names

// The loaded library, shared by all sessions of the process.
struct Runtime {
  const OrtApi* api = nullptr;
  OrtEnv* env = nullptr;
  OnnxRuntimeInfo info;
};

// "1.30.0" -> {1, 30, 0}; missing parts are 0.
std::vector<int> ParseVersion(const std::string& v) {
  std::vector<int> parts;
  std::stringstream ss(v);
  std::string p;
  while (std::getline(ss, p, '.')) parts.push_back(std::atoi(p.c_str()));
  parts.resize(3, 0);
  return parts;
}

Result<Runtime> LoadRuntime() {
  std::vector<std::string> candidates;
  const char* env_path = std::getenv("ONNXRUNTIME_LIB");
  if (env_path && *env_path) {
    candidates.push_back(env_path);  // the user's choice: no other copy is tried
  } else {
    if (*NEARLABEL_ORT_LIB) candidates.push_back(NEARLABEL_ORT_LIB);
    candidates.push_back("libonnxruntime.so.1");
  }
  std::string tried;
  for (const auto& path : candidates) {
    // RTLD_LOCAL keeps ORT's bundled symbols (protobuf among them) away from ours.
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      const char* err = dlerror();
      tried += (tried.empty() ? "" : "; ") + std::string(err ? err : path.c_str());
      continue;
    }
    auto get_base = reinterpret_cast<GetApiBaseFn>(dlsym(handle, "OrtGetApiBase"));
    if (!get_base) {
      return Status::Unsupported(path + " is not ONNX Runtime (no OrtGetApiBase)");
    }
    const OrtApiBase* base = get_base();
    Runtime rt;
    rt.info.path = path;
    rt.info.version = base->GetVersionString ? base->GetVersionString() : "";
    const auto v = ParseVersion(rt.info.version);
    if (v < ParseVersion(kOrtMinVersion) || v[0] >= 2) {
      return Status::Unsupported("ONNX Runtime " + rt.info.version + " at " + path +
                                 " is outside the supported range " + kOrtMinVersion +
                                 " to 1.x; set ONNXRUNTIME_LIB to a supported copy or use "
                                 "--backend opencv");
    }
    rt.api = base->GetApi(kApiVersion);
    if (!rt.api) {
      return Status::Unsupported("ONNX Runtime " + rt.info.version + " at " + path +
                                 " does not offer C API version " + std::to_string(kApiVersion));
    }
    if (OrtStatus* s = rt.api->CreateEnv(kLogError, "nearlabel", &rt.env)) {
      std::string msg = rt.api->GetErrorMessage(s);
      rt.api->ReleaseStatus(s);
      return Status::Internal("ONNX Runtime cannot start: " + msg);
    }
    // The library stays loaded for the life of the process (sessions may outlive callers).
    return rt;
  }
  return Status::NotFound("ONNX Runtime library not found (" + tried +
                          "); run scripts/setup.sh or set ONNXRUNTIME_LIB");
}

// ONNX Runtime's start-up (CreateEnv) recurses about three frames per byte of the process's
// command line (it reads /proc/self/cmdline), so a command given a few hundred image paths
// (~29 KB) overflowed the 8 MiB main stack and died with SIGSEGV. It runs on a thread whose
// stack is sized by the command line: 1 KiB per byte (about 3x what it uses) plus 16 MiB.
// Only the touched pages are ever backed by memory.
Result<Runtime> LoadRuntimeOnLargeStack() {
  Result<Runtime> runtime = Status::Internal("ONNX Runtime was not loaded");
  const size_t stack = (size_t{16} << 20) + CommandLineBytes() * 1024;
  RunWithStack(stack, [&] { runtime = LoadRuntime(); });
  return runtime;
}

// Whether ORT should multiply int8 models' matrices as u8u8 instead of u8s8. Without VNNI
// (AVX2, or AVX-512 without VNNI: AMD Zen 2/3, older Xeons) ORT's u8s8 kernel sums pairs of
// products in 16 bits with saturation (vpmaddubsw): on such a CPU mobilenetv2-12-int8's
// features were at cosine 0.87 to OpenCV DNN's for the same image and 1-NN accuracy fell 3
// points (caltech-101 75.8 % vs 78.9 %). u8u8 is exact and slower; CPUs with VNNI keep the
// fast kernel, which is exact there. NEARLABEL_ORT_INT8=precise|fast forces either.
bool PreciseInt8MatMul() {
  const char* force = std::getenv("NEARLABEL_ORT_INT8");
  if (force && std::string(force) == "precise") return true;
  if (force && std::string(force) == "fast") return false;
  unsigned a = 0, b = 0, c = 0, d = 0;
  bool vnni = false;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) vnni = (c >> 11) & 1;          // AVX512_VNNI
  if (!vnni && __get_cpuid_count(7, 1, &a, &b, &c, &d)) vnni = (a >> 4) & 1;  // AVX-VNNI
  return !vnni;
}

const Result<Runtime>& GetRuntime() {
  static const Result<Runtime> runtime = LoadRuntimeOnLargeStack();
  return runtime;
}

// A thread that runs one job at a time for the embedder. The extra sessions run on these
// persistent threads, not on a new thread per call: ORT keeps per-thread scratch buffers,
// and a fresh thread every batch pays for them again.
class Worker {
 public:
  Worker() : thread_([this] { Loop(); }) {}
  ~Worker() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  // Starts `job`; Wait() returns its status. One job at a time.
  void Start(std::function<Status()> job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = std::move(job);
      done_ = false;
    }
    cv_.notify_all();
  }
  Status Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_; });
    return result_;
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return quit_ || job_; });
      if (quit_) return;
      auto job = std::move(job_);
      job_ = nullptr;
      lock.unlock();
      Status st = job();
      lock.lock();
      result_ = st;
      done_ = true;
      cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::function<Status()> job_;
  Status result_;
  bool done_ = true;
  bool quit_ = false;
  std::thread thread_;  // last: starts after the members it uses
};

class OrtEmbedder : public Embedder {
 public:
  OrtEmbedder(const Runtime& rt, ModelCard card, std::string output_tensor)
      : api_(rt.api), card_(std::move(card)), output_tensor_(std::move(output_tensor)) {}
  ~OrtEmbedder() override {
    for (OrtSession* s : sessions_) api_->ReleaseSession(s);
    if (memory_) api_->ReleaseMemoryInfo(memory_);
  }
  OrtEmbedder(const OrtEmbedder&) = delete;
  OrtEmbedder& operator=(const OrtEmbedder&) = delete;

  const ModelCard& card() const override { return card_; }
  int max_batch() const override { return max_batch_; }
  std::string backend() const override { return "onnxruntime"; }

  // Turns an OrtStatus into a Status (and frees it).
  Status Check(OrtStatus* s, const std::string& what) const {
    if (!s) return Status::OK();
    std::string msg = api_->GetErrorMessage(s);
    api_->ReleaseStatus(s);
    return Status::Internal("ONNX Runtime: " + what + " failed for model " + card_.name + ": " +
                            msg);
  }

  Status Init(const Runtime& rt, const std::string& model_bytes, const EmbedderOptions& options) {
    OrtSessionOptions* so = nullptr;
    NL_RETURN_IF_ERROR(Check(api_->CreateSessionOptions(&so), "CreateSessionOptions"));
    struct Free {
      const OrtApi* api;
      OrtSessionOptions* so;
      ~Free() { api->ReleaseSessionOptions(so); }
    } free_so{api_, so};
    const int threads = options.threads > 0
                            ? options.threads
                            : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    // Data parallelism: `sessions` sessions run parts of a batch at once, each on
    // threads / sessions threads. One thread per session avoids ORT's per-operator barriers,
    // which cost more than they give on few cores (bench/embed_throughput measures both).
    const int sessions = std::clamp(options.sessions > 0 ? options.sessions : threads, 1, threads);
    const int per_session = std::max(1, threads / sessions);
    NL_RETURN_IF_ERROR(Check(api_->SetIntraOpNumThreads(so, per_session), "SetIntraOpNumThreads"));
    NL_RETURN_IF_ERROR(Check(api_->SetInterOpNumThreads(so, 1), "SetInterOpNumThreads"));
    NL_RETURN_IF_ERROR(
        Check(api_->SetSessionGraphOptimizationLevel(so, kOptimizeAll), "optimization level"));
    // Idle ORT workers spin by default; in a pipeline that steals the cores decoding needs.
    NL_RETURN_IF_ERROR(Check(api_->AddSessionConfigEntry(so, "session.intra_op.allow_spinning",
                                                         options.spin_wait ? "1" : "0"),
                             "allow_spinning"));
    if (PreciseInt8MatMul()) {
      NL_RETURN_IF_ERROR(Check(api_->AddSessionConfigEntry(so, "session.x64quantprecision", "1"),
                               "x64quantprecision"));
    }
    for (int i = 0; i < sessions; ++i) {
      OrtSession* session = nullptr;
      NL_RETURN_IF_ERROR(Check(api_->CreateSessionFromArray(rt.env, model_bytes.data(),
                                                            model_bytes.size(), so, &session),
                               "loading " + card_.onnx_path));
      sessions_.push_back(session);
      if (i > 0) workers_.push_back(std::make_unique<Worker>());
    }
    NL_RETURN_IF_ERROR(
        Check(api_->CreateCpuMemoryInfo(kDeviceAllocator, kMemTypeDefault, &memory_), "memory"));
    NL_RETURN_IF_ERROR(CheckInput());
    int limit = options.max_batch > 0 ? options.max_batch : kDefaultBatchPerSession * sessions;
    if (card_.max_batch > 0) limit = std::min(limit, card_.max_batch);
    if (fixed_batch_ > 0) limit = std::min(limit, static_cast<int>(fixed_batch_ * sessions));
    max_batch_ = std::max(1, limit);
    run_batch_ = options.run_batch > 0 ? options.run_batch
                 : card_.run_batch > 0 ? card_.run_batch
                                       : kDefaultBatchPerSession;
    return Status::OK();
  }

  int lanes() const override { return static_cast<int>(sessions_.size()); }
  // A run never exceeds max_batch_ (the card's and the caller's limit on one run).
  int lane_batch() const override {
    return static_cast<int>(fixed_batch_ > 0 ? fixed_batch_ : std::min(run_batch_, max_batch_));
  }
  Status EmbedOnLane(int lane, const float* input, int count, float* output) override {
    if (count <= 0) return Status::OK();
    if (lane < 0 || lane >= lanes() || count > lane_batch()) {
      return Status::InvalidArgument("lane " + std::to_string(lane) + ", batch of " +
                                     std::to_string(count) + ": the embedder has " +
                                     std::to_string(lanes()) + " lanes of " +
                                     std::to_string(lane_batch()) + " images");
    }
    return Run(sessions_[lane], input, count, output);
  }

  Status Embed(const float* input, int count, float* output) override {
    if (count <= 0) return Status::OK();
    if (count > max_batch_) {
      return Status::InvalidArgument("batch of " + std::to_string(count) + " exceeds " +
                                     std::to_string(max_batch_));
    }
    // Split the batch evenly over the sessions (a fixed-batch model gets its own size).
    const int n = static_cast<int>(sessions_.size());
    int per = (count + n - 1) / n;
    if (fixed_batch_ > 0) per = static_cast<int>(fixed_batch_);
    const auto& p = card_.preprocess;
    const size_t slot = static_cast<size_t>(3) * p.width * p.height;
    int started = 0;  // parts handed to workers (part 0 runs on the calling thread)
    for (int i = 1, begin = per; begin < count; ++i, begin += per) {
      const int c = std::min(per, count - begin);
      const float* in = input + begin * slot;
      float* out = output + static_cast<size_t>(begin) * floats_per_image();
      OrtSession* session = sessions_[i];
      workers_[i - 1]->Start([=] { return RunInChunks(session, in, c, out); });
      ++started;
    }
    Status st = RunInChunks(sessions_[0], input, std::min(per, count), output);
    for (int i = 0; i < started; ++i) {
      Status w = workers_[i]->Wait();
      if (st.ok()) st = w;
    }
    return st;
  }

 private:
  static constexpr int kDefaultBatchPerSession = 4;

  // Runs `count` images through one session, run_batch_ at a time (a fixed-batch model: all
  // at once, the split above gave each session its fixed size).
  Status RunInChunks(OrtSession* session, const float* input, int count, float* output) {
    const int step = fixed_batch_ > 0 ? count : run_batch_;
    const auto& p = card_.preprocess;
    const size_t slot = static_cast<size_t>(3) * p.width * p.height;
    for (int b = 0; b < count; b += step) {
      NL_RETURN_IF_ERROR(Run(session, input + b * slot, std::min(step, count - b),
                             output + static_cast<size_t>(b) * floats_per_image()));
    }
    return Status::OK();
  }

  // Runs `count` images through one session (one thread at a time per session).
  Status Run(OrtSession* session, const float* input, int count, float* output) {
    const auto& p = card_.preprocess;
    const int64_t shape[4] = {count, 3, p.height, p.width};
    const size_t bytes = sizeof(float) * count * 3 * p.height * p.width;
    OrtValue* in = nullptr;
    NL_RETURN_IF_ERROR(
        Check(api_->CreateTensorWithDataAsOrtValue(memory_, const_cast<float*>(input), bytes, shape,
                                                   4, kElementFloat, &in),
              "input tensor"));
    OrtValue* out = nullptr;
    const char* in_name = card_.input_name.c_str();
    const char* out_name = output_tensor_.c_str();
    Status st = Check(api_->Run(session, nullptr, &in_name, &in, 1, &out_name, 1, &out), "Run");
    api_->ReleaseValue(in);
    if (st.ok()) st = Pool(out, count, output);
    if (out) api_->ReleaseValue(out);
    return st;
  }

  // The card's input must exist, hold floats, and be N x 3 x height x width (fixed sizes must
  // match the card; a fixed N limits the batch).
  Status CheckInput() {
    size_t n = 0;
    NL_RETURN_IF_ERROR(Check(api_->SessionGetInputCount(sessions_[0], &n), "input count"));
    OrtAllocator* alloc = nullptr;
    NL_RETURN_IF_ERROR(Check(api_->GetAllocatorWithDefaultOptions(&alloc), "allocator"));
    std::string names;
    size_t index = n;
    for (size_t i = 0; i < n; ++i) {
      char* name = nullptr;
      NL_RETURN_IF_ERROR(Check(api_->SessionGetInputName(sessions_[0], i, alloc, &name), "input"));
      if (card_.input_name == name) index = i;
      names += (names.empty() ? "" : ", ") + std::string(name);
      (void)api_->AllocatorFree(alloc, name);
    }
    if (index == n) {
      return Status::NotFound("model card " + card_.card_path + " names input '" +
                              card_.input_name + "' but " + card_.onnx_path + " has: " + names);
    }
    OrtTypeInfo* type = nullptr;
    NL_RETURN_IF_ERROR(
        Check(api_->SessionGetInputTypeInfo(sessions_[0], index, &type), "input type"));
    struct Free {
      const OrtApi* api;
      OrtTypeInfo* t;
      ~Free() { api->ReleaseTypeInfo(t); }
    } free_type{api_, type};
    const OrtTensorTypeAndShapeInfo* info = nullptr;
    NL_RETURN_IF_ERROR(Check(api_->CastTypeInfoToTensorInfo(type, &info), "input info"));
    if (!info) return Status::Unsupported("input '" + card_.input_name + "' is not a tensor");
    int elem = 0;
    NL_RETURN_IF_ERROR(Check(api_->GetTensorElementType(info, &elem), "input element type"));
    if (elem != kElementFloat) {
      return Status::Unsupported("input '" + card_.input_name + "' of " + card_.onnx_path +
                                 " is not float32 (ONNX element type " + std::to_string(elem) +
                                 ")");
    }
    size_t rank = 0;
    NL_RETURN_IF_ERROR(Check(api_->GetDimensionsCount(info, &rank), "input rank"));
    std::vector<int64_t> dims(rank);
    NL_RETURN_IF_ERROR(Check(api_->GetDimensions(info, dims.data(), rank), "input dims"));
    const auto& p = card_.preprocess;
    const int64_t want[4] = {0, 3, p.height, p.width};
    bool ok = rank == 4;
    for (size_t i = 1; ok && i < 4; ++i) ok = dims[i] <= 0 || dims[i] == want[i];
    if (!ok) {
      std::string got;
      for (auto d : dims) got += (got.empty() ? "" : "x") + std::to_string(d);
      return Status::Mismatch("input '" + card_.input_name + "' of " + card_.onnx_path + " is " +
                              got + " but the card " + card_.card_path + " feeds Nx3x" +
                              std::to_string(p.height) + "x" + std::to_string(p.width));
    }
    fixed_batch_ = dims[0] > 0 ? dims[0] : 0;
    return Status::OK();
  }

  // The feature tensor is [N, C] or [N, C, spatial...].
  Status Pool(OrtValue* out, int count, float* output) {
    OrtTensorTypeAndShapeInfo* info = nullptr;
    NL_RETURN_IF_ERROR(Check(api_->GetTensorTypeAndShape(out, &info), "output shape"));
    size_t rank = 0;
    int elem = 0;
    std::vector<int64_t> dims;
    Status st = Check(api_->GetDimensionsCount(info, &rank), "output rank");
    if (st.ok()) {
      dims.resize(rank);
      st = Check(api_->GetDimensions(info, dims.data(), rank), "output dims");
    }
    if (st.ok()) st = Check(api_->GetTensorElementType(info, &elem), "output type");
    api_->ReleaseTensorTypeAndShapeInfo(info);
    NL_RETURN_IF_ERROR(st);
    const std::string& tensor = card_.feature_onnx_tensor;
    if (rank < 2 || dims[0] != count || elem != kElementFloat) {
      return Status::Mismatch("feature tensor " + tensor + " has an unexpected shape or type");
    }
    if (dims[1] != card_.dims) {
      return Status::Mismatch("model card " + card_.name + " says dims " +
                              std::to_string(card_.dims) + " but tensor " + tensor + " has " +
                              std::to_string(dims[1]) + " channels");
    }
    size_t spatial = 1;
    for (size_t i = 2; i < rank; ++i) spatial *= static_cast<size_t>(dims[i]);
    if (card_.pooling == "none" && spatial != 1) {
      return Status::Mismatch("feature tensor " + tensor + " is spatial but pooling is none");
    }
    void* data = nullptr;
    NL_RETURN_IF_ERROR(Check(api_->GetTensorMutableData(out, &data), "output data"));
    if (card_.pooling == "patches") {
      const size_t grid = static_cast<size_t>(card_.patch_grid);
      if (rank != 4 || dims[2] != card_.patch_grid || dims[3] != card_.patch_grid) {
        return Status::Mismatch("model card " + card_.name + " says the patch map " + tensor +
                                " is " + std::to_string(grid) + "x" + std::to_string(grid) +
                                " but it is not");
      }
      ChannelsLast(static_cast<const float*>(data), count, card_.dims, grid * grid, output);
      return Status::OK();
    }
    MeanPoolAndNormalize(static_cast<const float*>(data), count, card_.dims, spatial, output);
    return Status::OK();
  }

  const OrtApi* api_;
  ModelCard card_;
  std::string output_tensor_;  // the feature tensor, or its dequantized copy
  std::vector<OrtSession*> sessions_;
  std::vector<std::unique_ptr<Worker>> workers_;  // one per session after the first
  OrtMemoryInfo* memory_ = nullptr;
  int64_t fixed_batch_ = 0;
  int run_batch_ = kDefaultBatchPerSession;
  int max_batch_ = 1;
};

}  // namespace

Result<OnnxRuntimeInfo> LoadOnnxRuntime() {
  const auto& rt = GetRuntime();
  if (!rt.ok()) return rt.status();
  return rt->info;
}

Result<std::unique_ptr<Embedder>> CreateOnnxRuntimeEmbedder(const ModelCard& card,
                                                            const EmbedderOptions& options) {
  const auto& rt = GetRuntime();
  if (!rt.ok()) return rt.status();
  if (card.feature_onnx_tensor.empty()) {
    return Status::InvalidArgument("model card " + card.card_path +
                                   " has no feature.onnx_tensor, which ONNX Runtime needs");
  }
  NL_ASSIGN_OR_RETURN(std::string bytes, ReadModelFile(card));
  std::string output_tensor;
  NL_ASSIGN_OR_RETURN(std::string graph, ExtractFeatureGraph(bytes, card.feature_onnx_tensor,
                                                             card.onnx_path, &output_tensor));
  bytes.clear();
  bytes.shrink_to_fit();
  auto embedder = std::make_unique<OrtEmbedder>(*rt, card, output_tensor);
  NL_RETURN_IF_ERROR(embedder->Init(*rt, graph, options));
  // A probe run checks the feature width against the card now, not mid-ingest.
  const auto& p = card.preprocess;
  std::vector<float> probe(static_cast<size_t>(3) * p.width * p.height, 0.f);
  std::vector<float> out(embedder->floats_per_image());
  NL_RETURN_IF_ERROR(embedder->Embed(probe.data(), 1, out.data()));
  return ApplyEmbeddingOptions(std::move(embedder));
}

const char* BackendName(Backend b) {
  switch (b) {
    case Backend::kAuto:
      return "auto";
    case Backend::kOnnxRuntime:
      return "onnxruntime";
    case Backend::kOpenCv:
      return "opencv";
  }
  return "?";
}

Result<Backend> ParseBackend(const std::string& name) {
  if (name == "auto") return Backend::kAuto;
  if (name == "onnxruntime" || name == "ort") return Backend::kOnnxRuntime;
  if (name == "opencv" || name == "opencv-dnn") return Backend::kOpenCv;
  return Status::InvalidArgument("unknown backend '" + name +
                                 "' (choose auto, onnxruntime or opencv)");
}

Result<std::unique_ptr<Embedder>> CreateEmbedder(const ModelCard& card,
                                                 const EmbedderOptions& options,
                                                 std::string* notice) {
  switch (options.backend) {
    case Backend::kOpenCv:
      return CreateOpenCvEmbedder(card, options);
    case Backend::kOnnxRuntime:
      return CreateOnnxRuntimeEmbedder(card, options);
    case Backend::kAuto:
      break;
  }
  const auto& rt = GetRuntime();
  if (!rt.ok() && rt.status().code() == Status::Code::kNotFound) {
    if (notice) {
      *notice = "ONNX Runtime not found, using OpenCV DNN (several times slower): " +
                rt.status().message();
    }
    return CreateOpenCvEmbedder(card, options);
  }
  return CreateOnnxRuntimeEmbedder(card, options);
}

}  // namespace nearlabel
