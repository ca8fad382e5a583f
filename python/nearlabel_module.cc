// The `nearlabel` Python module (pybind11): a Collection with numpy in and out. Arguments
// are converted with the GIL held; decoding, embedding, searching and evaluating run with it
// released (engine.h). Errors are exceptions of nearlabel.Error's family, one per Status
// code, with the CLI's messages. See docs/python.md and python/nearlabel.pyi.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <fstream>
#include <opencv2/imgproc.hpp>

#include "common/json.h"
#include "common/sha256.h"
#include "engine.h"
#include "eval/report.h"
#include "nearlabel/dataset.h"
#include "nearlabel/image.h"
#include "nearlabel/index.h"
#include "nearlabel/ingest.h"
#include "nearlabel/query_eval.h"
#include "nearlabel/segment.h"
#include "nearlabel/store.h"

namespace py = pybind11;
using nlohmann::json;

namespace nearlabel::python {
namespace {

constexpr const char* kDefaultModel = "mobilenetv2-12-int8";

// ---------------------------------------------------------------- errors
struct StatusError {
  Status status;
};
[[noreturn]] void Throw(const Status& st) { throw StatusError{st}; }
void Check(const Status& st) {
  if (!st.ok()) Throw(st);
}
template <typename T>
T Take(Result<T> r) {
  if (!r.ok()) Throw(r.status());
  return std::move(*r);
}

PyObject* g_errors[8] = {};  // by Status::Code

void RegisterErrors(py::module_& m) {
  PyObject* base = PyErr_NewExceptionWithDoc(
      "nearlabel.Error",
      "Every error nearlabel raises; its message is the CLI's (what happened, what was left "
      "untouched, what to do). Subclasses by kind.",
      PyExc_Exception, nullptr);
  m.attr("Error") = py::handle(base);
  struct Kind {
    Status::Code code;
    const char* name;
    PyObject* also;
    const char* doc;
  };
  const Kind kinds[] = {
      {Status::Code::kInvalidArgument, "InvalidArgumentError", PyExc_ValueError,
       "A malformed argument: a bad option, a where that writes, an image that is not HxWx3 "
       "uint8."},
      {Status::Code::kNotFound, "NotFoundError", PyExc_LookupError,
       "A file, model, store or row that does not exist."},
      {Status::Code::kCorruption, "CorruptionError", nullptr,
       "Data that exists but cannot be read: a corrupt image, a damaged store."},
      {Status::Code::kIOError, "IOError", PyExc_OSError,
       "The operating system or the database refused a read or write."},
      {Status::Code::kMismatch, "MismatchError", nullptr,
       "A store and a model (or vectors) that do not fit together."},
      {Status::Code::kUnsupported, "UnsupportedError", nullptr,
       "A valid input this build cannot handle."},
      {Status::Code::kInternal, "InternalError", nullptr, "A library failed unexpectedly."},
  };
  g_errors[0] = base;
  for (const Kind& k : kinds) {
    PyObject* bases = k.also ? PyTuple_Pack(2, base, k.also) : PyTuple_Pack(1, base);
    const std::string qualified = std::string("nearlabel.") + k.name;
    PyObject* cls = PyErr_NewExceptionWithDoc(qualified.c_str(), k.doc, bases, nullptr);
    Py_DECREF(bases);
    g_errors[static_cast<int>(k.code)] = cls;
    m.attr(k.name) = py::handle(cls);
  }
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const StatusError& e) {
      PyObject* cls = g_errors[static_cast<int>(e.status.code())];
      PyErr_SetString(cls ? cls : g_errors[0], e.status.message().c_str());
    }
  });
}

// ---------------------------------------------------------------- conversions
py::object JsonToPy(const json& j) {
  switch (j.type()) {
    case json::value_t::object: {
      py::dict d;
      for (const auto& [k, v] : j.items()) d[py::str(k)] = JsonToPy(v);
      return std::move(d);
    }
    case json::value_t::array: {
      py::list l;
      for (const auto& v : j) l.append(JsonToPy(v));
      return std::move(l);
    }
    case json::value_t::string:
      return py::str(j.get_ref<const std::string&>());
    case json::value_t::boolean:
      return py::bool_(j.get<bool>());
    case json::value_t::number_integer:
      return py::int_(j.get<int64_t>());
    case json::value_t::number_unsigned:
      return py::int_(j.get<uint64_t>());
    case json::value_t::number_float:
      return py::float_(j.get<double>());
    default:
      return py::none();
  }
}

// An HxWx3 (RGB) or HxW (grey) uint8 array as an owned 8-bit BGR image.
cv::Mat PixelsOf(const py::array& a, size_t i) {
  const std::string which = "image " + std::to_string(i);
  if (!a.dtype().is(py::dtype::of<uint8_t>())) {
    Throw(Status::InvalidArgument(which + ": a numpy image must be uint8 (got " +
                                  std::string(py::str(a.dtype())) + "); HxWx3 RGB or HxW grey"));
  }
  const bool grey = a.ndim() == 2;
  if (!(grey || (a.ndim() == 3 && a.shape(2) == 3)) || a.shape(0) < 1 || a.shape(1) < 1) {
    std::string shape;
    for (py::ssize_t d = 0; d < a.ndim(); ++d) shape += (d ? "x" : "") + std::to_string(a.shape(d));
    Throw(Status::InvalidArgument(which + ": a numpy image must be HxWx3 RGB or HxW grey, got " +
                                  shape));
  }
  auto c = py::array_t<uint8_t, py::array::c_style>::ensure(a);
  const int h = static_cast<int>(c.shape(0)), w = static_cast<int>(c.shape(1));
  cv::Mat view(h, w, grey ? CV_8UC1 : CV_8UC3, const_cast<uint8_t*>(c.data()));
  cv::Mat bgr;
  cv::cvtColor(view, bgr, grey ? cv::COLOR_GRAY2BGR : cv::COLOR_RGB2BGR);  // copies
  return bgr;
}

ImageInput InputOf(py::handle item, size_t i) {
  ImageInput in;
  if (py::isinstance<py::str>(item) || py::hasattr(item, "__fspath__")) {
    in.kind = ImageInput::Kind::kPath;
    in.data = py::str(py::module_::import("os").attr("fspath")(item));
    in.name = in.data;
  } else if (py::isinstance<py::bytes>(item) || py::isinstance<py::bytearray>(item) ||
             py::isinstance<py::memoryview>(item)) {
    in.kind = ImageInput::Kind::kBytes;
    PyObject* b = PyBytes_FromObject(item.ptr());  // bytes, bytearray, memoryview
    if (!b) throw py::error_already_set();
    in.data = std::string(py::reinterpret_steal<py::bytes>(b));
    in.name = "<bytes " + std::to_string(i) + ">";
  } else if (py::isinstance<py::array>(item)) {
    in.kind = ImageInput::Kind::kPixels;
    in.bgr = PixelsOf(py::reinterpret_borrow<py::array>(item), i);
    in.name = "<array " + std::to_string(i) + ">";
  } else {
    throw py::type_error("image " + std::to_string(i) +
                         ": expected a path, bytes of an image file, or a numpy HxWx3 uint8 "
                         "RGB array; got " +
                         std::string(py::str(item.get_type())));
  }
  return in;
}

// One image (a path, bytes, an array) or many (a list/tuple/iterable, or an NxHxWx3 array).
std::vector<ImageInput> InputsOf(py::handle images, bool* single) {
  *single = false;
  if (py::isinstance<py::array>(images) && py::reinterpret_borrow<py::array>(images).ndim() == 4) {
    auto a = py::reinterpret_borrow<py::array>(images);
    std::vector<ImageInput> out;
    for (py::ssize_t i = 0; i < a.shape(0); ++i) out.push_back(InputOf(a[py::int_(i)], i));
    return out;
  }
  if (py::isinstance<py::str>(images) || py::isinstance<py::bytes>(images) ||
      py::isinstance<py::bytearray>(images) || py::isinstance<py::memoryview>(images) ||
      py::isinstance<py::array>(images) || py::hasattr(images, "__fspath__")) {
    *single = true;
    return {InputOf(images, 0)};
  }
  if (!py::isinstance<py::iterable>(images)) {
    *single = true;
    return {InputOf(images, 0)};  // raises the TypeError that says what an image may be
  }
  std::vector<ImageInput> out;
  for (py::handle item : py::iter(images)) out.push_back(InputOf(item, out.size()));
  return out;
}

// ---------------------------------------------------------------- result types
struct PyNeighbor {
  int64_t id = 0;
  float distance = 0;
  std::string label, source;
  py::object metadata;
};

struct PyAnswer {  // a Classification, or a SearchResult (classify false)
  bool classify = true;
  std::string image, label, plan, voted_label, rejected_why;
  double confidence = 0;
  bool unknown = false;
  float reject_threshold = -1;
  std::vector<std::pair<std::string, double>> scores;
  std::vector<PyNeighbor> neighbors;
};

struct PyImageError {
  std::string image, message, kind;
};

PyAnswer AnswerOf(const ImageAnswer& a, bool classify) {
  PyAnswer r;
  r.classify = classify;
  r.image = a.image;
  const Collection::Classified& c = a.classified;
  r.plan = c.answer.plan;
  for (size_t i = 0; i < c.answer.neighbors.size(); ++i) {
    const AnswerRow& row = c.answer.neighbors[i];
    r.neighbors.push_back({row.id, row.distance, i < c.labels.size() ? c.labels[i] : "", row.source,
                           JsonToPy(ParseJson(row.metadata))});
  }
  r.label = c.prediction.label;
  r.confidence = c.prediction.confidence;
  r.scores = c.prediction.scores;
  r.unknown = c.unknown;
  r.voted_label = c.voted_label;
  r.rejected_why = c.rejected_why;
  r.reject_threshold = c.reject_threshold;
  return r;
}

const char* CodeName(Status::Code code) {
  switch (code) {
    case Status::Code::kInvalidArgument:
      return "InvalidArgumentError";
    case Status::Code::kNotFound:
      return "NotFoundError";
    case Status::Code::kCorruption:
      return "CorruptionError";
    case Status::Code::kIOError:
      return "IOError";
    case Status::Code::kMismatch:
      return "MismatchError";
    case Status::Code::kUnsupported:
      return "UnsupportedError";
    default:
      return "InternalError";
  }
}

struct PyReport {
  std::string location, model, protocol, label_field;
  EvalReport report;
  VectorTable shown;  // the rows the report indexes (no vectors needed)
};

std::vector<std::string> Dirs(const std::optional<std::vector<std::string>>& models) {
  return ModelSearchDirs(models.value_or(std::vector<std::string>{}));
}

}  // namespace

// ---------------------------------------------------------------- the collection
class PyCollection {
 public:
  PyCollection(std::string location, std::vector<std::string> model_dirs, bool exact)
      : location_(std::move(location)), dirs_(std::move(model_dirs)) {
    py::gil_scoped_release release;
    CollectionOptions opt;
    opt.use_index = !exact;
    collection_ = Take(Collection::Open(location_, opt));
    pool_ =
        std::make_unique<EmbedderPool>(Take(ModelOfStore(collection_->info(), location_, dirs_)));
    centre_ = collection_->info().centre;
  }

  const std::string& location() const { return location_; }
  size_t size() const { return collection_->size(); }

  py::dict Info() const {
    const CollectionState s = collection_->state();
    const CollectionInfo& i = collection_->info();
    py::dict d;
    d["location"] = MaskedLocation(location_);
    d["model"] = i.model;
    d["dims"] = i.dims;
    d["label_field"] = i.label_field;
    d["rows"] = s.rows;
    d["index_rows"] = s.index_rows;
    d["index_lag"] = s.index_lag;
    d["segment"] = s.segment;
    d["change_id"] = s.change_id;
    return d;
  }

  py::object Query(py::handle images, bool classify, int k, const std::string& vote,
                   const std::optional<std::string>& within,
                   const std::optional<std::string>& where, bool reject, double reject_quantile,
                   const std::optional<std::string>& label, bool exact, int ef,
                   const std::string& on_error, const std::string& confidence = "vote") {
    if (confidence != "calibrated" && confidence != "vote") {
      Throw(Status::InvalidArgument("confidence must be 'calibrated' or 'vote', not '" +
                                    confidence + "'"));
    }
    if (on_error != "raise" && on_error != "keep") {
      Throw(Status::InvalidArgument("on_error must be 'raise' or 'keep', not '" + on_error + "'"));
    }
    bool single = false;
    std::vector<ImageInput> inputs = InputsOf(images, &single);
    std::vector<ImageAnswer> answers;
    {
      py::gil_scoped_release release;
      ClassifyRequest req = Request(classify, k, vote, within, where, label, exact, ef);
      std::optional<RejectThresholds> thresholds;
      if (classify && reject) thresholds = Rejection(req, reject_quantile);
      req.reject = thresholds ? &*thresholds : nullptr;
      std::optional<Calibration> calibration;
      if (classify && confidence == "calibrated") calibration = CalibrationFor(req);
      req.calibration = calibration ? &*calibration : nullptr;
      auto lease = Take(pool_->Acquire(inputs.size() >= 8));
      bool interrupted = false;
      answers = Take(ClassifyInputs(*collection_, *lease, inputs, req, nullptr, &interrupted));
    }
    py::list out;
    for (const ImageAnswer& a : answers) {
      if (!a.status.ok()) {
        if (on_error == "raise") Throw(a.status.WithContext(a.image));
        out.append(py::cast(PyImageError{a.image, a.status.message(), CodeName(a.status.code())}));
      } else {
        out.append(py::cast(AnswerOf(a, classify)));
      }
    }
    if (single) return out[0];
    return std::move(out);
  }

  py::array Vectors() {
    std::shared_ptr<const VectorSegment> seg;
    {
      py::gil_scoped_release release;
      seg = Take(collection_->Vectors());
    }
    return View<float>(seg, seg->vectors(), {seg->rows(), static_cast<size_t>(seg->dims())});
  }
  py::array Ids() {
    std::shared_ptr<const VectorSegment> seg;
    {
      py::gil_scoped_release release;
      seg = Take(collection_->Vectors());
    }
    return View<int64_t>(seg, seg->ids(), {seg->rows()});
  }

  py::list Metadata() {
    std::shared_ptr<const VectorSegment> seg;
    std::unordered_map<int64_t, std::string> by_id;
    {
      py::gil_scoped_release release;
      seg = Take(collection_->Vectors());
      auto store = Take(OpenStore(location_, Store::Mode::kReadOnly));
      const bool pg = IsPostgresUri(location_);
      auto r = Take(store->Execute(std::string("SELECT id, ") +
                                   (pg ? "metadata::text" : "metadata") + " FROM items"));
      for (const auto& row : r.front().rows) {
        by_id[std::get<int64_t>(row[0])] =
            std::holds_alternative<std::string>(row[1]) ? std::get<std::string>(row[1]) : "";
      }
    }
    py::list out;
    for (size_t i = 0; i < seg->rows(); ++i) out.append(JsonToPy(ParseJson(by_id[seg->ids()[i]])));
    return out;
  }

  size_t Refresh() {
    py::gil_scoped_release release;
    const size_t applied = Take(collection_->Refresh());
    // An ingest that centred the store again gave its rows a new mean: queries need it too.
    auto store = Take(OpenStore(location_, Store::Mode::kReadOnly));
    if (auto info = Take(store->GetCollection()); info && info->centre != centre_) {
      pool_ = std::make_unique<EmbedderPool>(Take(ModelOfStore(*info, location_, dirs_)));
      centre_ = info->centre;
    }
    return applied;
  }

  PyReport Evaluate(const std::optional<std::string>& label,
                    const std::optional<std::string>& within,
                    const std::optional<std::string>& group_by, int k, const std::string& vote,
                    const std::optional<std::string>& where, py::object queries,
                    const std::optional<std::string>& query_label, const std::string& layout);

 private:
  template <typename T>
  py::array View(const std::shared_ptr<const VectorSegment>& seg, const T* data,
                 std::vector<size_t> shape) {
    // The array's base owns a reference to the segment: the mapping lives as long as any view.
    auto* keep = new std::shared_ptr<const VectorSegment>(seg);
    py::capsule owner(
        keep, [](void* p) { delete static_cast<std::shared_ptr<const VectorSegment>*>(p); });
    py::array_t<T> a(shape, data, owner);
    a.attr("setflags")(py::arg("write") = false);
    return std::move(a);
  }

  ClassifyRequest Request(bool classify, int k, const std::string& vote,
                          const std::optional<std::string>& within,
                          const std::optional<std::string>& where,
                          const std::optional<std::string>& label, bool exact, int ef) const {
    ClassifyRequest r;
    if (k < 1) Throw(Status::InvalidArgument("k must be >= 1"));
    r.query.k = k;
    r.query.ef = ef;
    r.query.exact = exact;
    r.query.where_sql = Take(RowFilterSql(within.value_or(""), where.value_or("")));
    r.vote = classify ? Take(ParseVote(vote)) : Vote::kMajority;
    const std::string& store_label = collection_->info().label_field;
    r.label_field = label ? *label : store_label.empty() ? "label" : store_label;
    return r;
  }

  // None when the rows cannot be calibrated (one class): the confidence is the vote's share.
  std::optional<Calibration> CalibrationFor(const ClassifyRequest& req) const {
    auto store = Take(OpenStore(location_, Store::Mode::kReadOnly));
    auto c = CachedCalibration(*store, location_, req.query.where_sql, req.label_field, req.query.k,
                               req.vote);
    if (!c.ok() && c.status().code() == Status::Code::kInvalidArgument) return std::nullopt;
    return Take(std::move(c));
  }

  RejectThresholds Rejection(const ClassifyRequest& req, double quantile) const {
    auto store = Take(OpenStore(location_, Store::Mode::kReadOnly));
    return Take(CachedRejection(*store, location_, req.query.where_sql, req.label_field, quantile));
  }

  std::string location_;
  std::string centre_;  // the store's centre the pool's embedders subtract
  std::vector<std::string> dirs_;
  std::unique_ptr<Collection> collection_;
  std::unique_ptr<EmbedderPool> pool_;
};

PyReport PyCollection::Evaluate(const std::optional<std::string>& label,
                                const std::optional<std::string>& within,
                                const std::optional<std::string>& group_by, int k,
                                const std::string& vote, const std::optional<std::string>& where,
                                py::object queries, const std::optional<std::string>& query_label,
                                const std::string& layout) {
  std::optional<std::string> query_root;
  if (!queries.is_none()) query_root = py::str(py::module_::import("os").attr("fspath")(queries));
  py::gil_scoped_release release;
  EvalOptions opt;
  opt.label_field = label ? *label : collection_->info().label_field;
  opt.within_field = within.value_or("");
  opt.group_field = group_by.value_or("");
  opt.k = k;
  opt.vote = Take(ParseVote(vote));
  PyReport r;
  r.location = location_;
  r.model = collection_->info().model;
  r.label_field = opt.label_field;
  if (!query_root) {
    auto store = Take(OpenStore(location_, Store::Mode::kReadOnly));
    r.shown = Take(store->LoadVectors(where.value_or("")));
    r.report = Take(LeaveOneOut(r.shown, opt));
    r.protocol = group_by ? "leave-one-group-out by " + *group_by : "leave-one-out";
    r.shown.vectors.clear();
    r.shown.vectors.shrink_to_fit();
  } else {
    const DatasetListing listing = Take(ListDataset(*query_root, Take(ParseDatasetLayout(layout))));
    if (listing.items.empty())
      Throw(Status::NotFound("queries " + *query_root + ": no images found"));
    QueryEvalOptions qo;
    qo.eval = opt;
    qo.query_label = query_label.value_or("");
    qo.where_sql = where.value_or("");
    auto lease = Take(pool_->Acquire(true));
    QueryEvalResult q = Take(EvaluateQueries(*collection_, *lease, listing, qo, {}, nullptr));
    r.report = std::move(q.report);
    r.shown = std::move(q.shown);
    r.protocol = "held-out queries " + listing.root;
  }
  r.protocol += ", " + std::to_string(k) + "-NN, cosine distance" +
                (within ? ", neighbours within the same " + *within : "");
  return r;
}

// ---------------------------------------------------------------- module functions
namespace {

py::dict IngestInto(const std::string& store_location, py::object dataset,
                    const std::optional<std::string>& model, const std::string& layout, int batch,
                    bool index, const std::optional<std::vector<std::string>>& models,
                    py::object progress) {
  const std::string root = py::str(py::module_::import("os").attr("fspath")(dataset));
  IngestReport rep;
  std::string index_summary;
  std::optional<py::error_already_set> callback_error;
  {
    py::gil_scoped_release release;
    const std::vector<std::string> dirs = Dirs(models);
    DatasetListing listing = Take(ListDataset(root, Take(ParseDatasetLayout(layout))));
    if (listing.items.empty()) Throw(Status::NotFound("no images found in " + root));
    std::string name = model.value_or("");
    auto store = Take(OpenStore(store_location, Store::Mode::kCreate));
    Check(store->CheckIntegrity());
    const auto info = Take(store->GetCollection());
    if (name.empty()) name = info ? info->model : kDefaultModel;
    const ModelCard found = Take(FindModel(name, dirs));
    const ModelCard card =
        Take(CardForIngest(found, info, found.embedding, store->ingest_queue() != nullptr));
    const std::string sha = Take(Sha256File(card.onnx_path));
    Check(PrepareStoreForDataset(*store, card, sha, listing));
    EmbedderOptions eo;
    auto embedder = Take(CreateEmbedder(card, eo, nullptr));
    std::atomic<bool> stop{false};
    ProgressFn fn;
    if (!progress.is_none()) {
      fn = [&](size_t done, size_t total) {
        py::gil_scoped_acquire gil;
        try {
          progress(done, total);
        } catch (py::error_already_set& e) {
          callback_error = std::move(e);
          stop = true;
        }
      };
    }
    IngestOptions io;
    io.batch_size = batch;
    IngestQueue* queue = store->ingest_queue();
    io.job = std::filesystem::path(listing.root).filename().string();
    rep = Take(queue ? IngestShared(listing, *embedder, *store, *queue, io, fn, &stop)
                     : Ingest(listing, *embedder, *store, io, fn, &stop));
    Check(UpdateStoreCentre(*store, card, nullptr));
    if (!rep.interrupted && !queue) {
      index_summary = IndexUpdateSummary(Take(UpdateStoreIndex(*store, index, {})));
    }
  }
  if (callback_error) throw std::move(*callback_error);
  py::dict d;
  d["listed"] = rep.listed;
  d["inserted"] = rep.inserted;
  d["already_stored"] = rep.already_stored;
  d["duplicates"] = rep.duplicates;
  d["failed"] = rep.failed;
  d["seconds"] = rep.seconds;
  d["interrupted"] = rep.interrupted;
  d["index"] = index_summary;
  py::list problems;
  for (const DatasetProblem& p : rep.problems) problems.append(py::make_tuple(p.path, p.reason));
  d["problems"] = problems;
  return d;
}

py::array Embed(py::handle images, const std::string& model,
                const std::optional<std::vector<std::string>>& models) {
  bool single = false;
  std::vector<ImageInput> inputs = InputsOf(images, &single);
  std::vector<float> out;
  size_t dims = 0;
  {
    py::gil_scoped_release release;
    const ModelCard card = Take(FindModel(model, Dirs(models)));
    EmbedderOptions eo;
    eo.sessions = inputs.size() >= 8 ? 0 : 1;
    auto embedder = Take(CreateEmbedder(card, eo, nullptr));
    dims = embedder->floats_per_image();
    out.assign(inputs.size() * dims, 0.f);
    bool interrupted = false;
    Check(EmbedInputs(
        inputs, *embedder,
        [&](size_t i, const Status& st, const float* v) -> Status {
          if (!st.ok()) return st.WithContext(inputs[i].name);
          std::copy_n(v, dims, out.begin() + i * dims);
          return Status::OK();
        },
        nullptr, &interrupted));
  }
  py::array_t<float> a({inputs.size(), dims});
  std::copy(out.begin(), out.end(), a.mutable_data());
  if (single) return a[py::int_(0)].cast<py::array>();
  return std::move(a);
}

py::list Models(const std::optional<std::vector<std::string>>& models) {
  std::vector<std::string> errors;
  py::list out;
  for (const ModelCard& c : ListModels(Dirs(models), &errors)) {
    py::dict d;
    d["name"] = c.name;
    d["dims"] = c.dims;
    d["description"] = c.description;
    d["card"] = c.card_path;
    d["onnx"] = c.onnx_path;
    d["patches"] = !c.patch_onnx_tensor.empty();
    out.append(d);
  }
  return out;
}

void ReportToHtml(const PyReport& r, const std::string& path) {
  py::gil_scoped_release release;
  auto store = Take(OpenStore(r.location, Store::Mode::kReadOnly));
  EvalReportPage page;
  page.store = MaskedLocation(r.location);
  page.model = r.model;
  page.protocol = r.protocol;
  page.report = &r.report;
  page.table = &r.shown;
  ReportThumbnails thumbnails(*store, r.shown);
  page.thumbnail = [&thumbnails](int64_t id) { return thumbnails(id); };
  const std::string html = RenderEvalReport(page);
  std::ofstream f(path, std::ios::binary);
  f << html;
  if (!f) Throw(Status::IOError("cannot write " + path));
}

std::string AnswerRepr(const PyAnswer& a) {
  std::string s = a.classify ? "Classification(" : "SearchResult(";
  s += "image=" + std::string(py::repr(py::str(a.image)));
  if (a.classify) {
    s += ", label=" + std::string(py::repr(py::str(a.unknown ? "unknown" : a.label))) +
         ", confidence=" + std::to_string(a.confidence).substr(0, 5);
  }
  s += ", neighbors=" + std::to_string(a.neighbors.size()) + ")";
  return s;
}

}  // namespace
}  // namespace nearlabel::python

// ---------------------------------------------------------------- bindings
namespace nearlabel::python {
namespace {

// Neighbor, Classification (alias SearchResult), ImageError.
void BindAnswers(py::module_& m) {
  py::class_<PyNeighbor>(m, "Neighbor", "A stored row near the query.")
      .def_readonly("id", &PyNeighbor::id, "The row's id in the store.")
      .def_readonly("distance", &PyNeighbor::distance,
                    "Cosine distance (1 - cosine similarity) to the stored float32 vector.")
      .def_readonly("label", &PyNeighbor::label, "The row's label field value (\"\" if none).")
      .def_readonly("source", &PyNeighbor::source, "The stored image path.")
      .def_readonly("metadata", &PyNeighbor::metadata, "The row's metadata (a dict).")
      .def("__repr__", [](const PyNeighbor& n) {
        return "Neighbor(id=" + std::to_string(n.id) + ", distance=" + std::to_string(n.distance) +
               ", label=" + std::string(py::repr(py::str(n.label))) + ")";
      });

  py::class_<PyAnswer>(m, "Classification",
                       "The answer for one image: the neighbours' vote (classify) or just the "
                       "neighbours (search; then label is None).")
      .def_readonly("image", &PyAnswer::image, "The path given, or <bytes i> / <array i>.")
      .def_property_readonly(
          "label",
          [](const PyAnswer& a) -> py::object {
            if (!a.classify) return py::none();
            return py::str(a.unknown ? "unknown" : a.label);
          },
          "The predicted label ('unknown' when rejected; '' when no neighbour has a label).")
      .def_readonly("confidence", &PyAnswer::confidence,
                    "The label's calibrated probability (classify(confidence='calibrated')), or "
                    "its share of the vote.")
      .def_readonly("unknown", &PyAnswer::unknown,
                    "True when open-set rejection found the nearest neighbour too far.")
      .def_readonly("scores", &PyAnswer::scores, "(label, share of the vote) pairs, best first.")
      .def_readonly("neighbors", &PyAnswer::neighbors, "The k nearest rows, nearest first.")
      .def_readonly("plan", &PyAnswer::plan, "How the rows were found (index or exact scan).")
      .def_readonly("voted_label", &PyAnswer::voted_label, "When rejected: what the vote said.")
      .def_readonly("rejected_why", &PyAnswer::rejected_why, "When rejected: why.")
      .def("__repr__", &AnswerRepr);
  m.attr("SearchResult") = m.attr("Classification");

  py::class_<PyImageError>(m, "ImageError",
                           "In place of a result (on_error='keep'): an image that could not be "
                           "read or decoded.")
      .def_readonly("image", &PyImageError::image)
      .def_readonly("message", &PyImageError::message)
      .def_readonly("kind", &PyImageError::kind, "The nearlabel.Error subclass it would raise.")
      .def("__repr__", [](const PyImageError& e) {
        return "ImageError(" + std::string(py::repr(py::str(e.image))) + ", " +
               std::string(py::repr(py::str(e.message))) + ")";
      });
}

// Report: an evaluation's figures, numpy confusion, mismatches, to_html.
void BindReport(py::module_& m) {
  py::class_<PyReport>(m, "Report", "An evaluation: accuracy, per class, confusion, mistakes.")
      .def_property_readonly("accuracy", [](const PyReport& r) { return r.report.accuracy; })
      .def_property_readonly(
          "n", [](const PyReport& r) { return r.report.n; }, "Images evaluated.")
      .def_property_readonly("correct", [](const PyReport& r) { return r.report.correct; })
      .def_readonly("protocol", &PyReport::protocol)
      .def_property_readonly(
          "classes", [](const PyReport& r) { return r.report.classes; },
          "The labels, sorted: the confusion matrix's order.")
      .def_property_readonly(
          "confusion",
          [](const PyReport& r) {
            const size_t c = r.report.classes.size();
            py::array_t<int64_t> a({c, c});
            auto v = a.mutable_unchecked<2>();
            for (size_t i = 0; i < c; ++i)
              for (size_t j = 0; j < c; ++j)
                v(i, j) = static_cast<int64_t>(r.report.confusion[i][j]);
            return a;
          },
          "numpy int64 [truth, predicted], rows and columns in `classes` order.")
      .def_property_readonly(
          "per_class",
          [](const PyReport& r) {
            py::list out;
            for (const ClassStats& s : r.report.per_class) {
              py::dict d;
              d["label"] = s.label;
              d["support"] = s.support;
              d["precision"] = s.precision;
              d["recall"] = s.recall;
              d["f1"] = s.f1;
              out.append(d);
            }
            return out;
          },
          "One dict per class: label, support, precision, recall, f1.")
      .def_property_readonly(
          "mismatches",
          [](const PyReport& r) {
            py::list out;
            for (const EvalCase& c : r.report.mismatches) {
              const size_t nb = c.neighbors.front().row;
              py::dict d;
              d["id"] = r.shown.ids[c.row] < 0 ? py::none() : py::cast(r.shown.ids[c.row]);
              d["source"] = r.shown.sources[c.row];
              d["truth"] = c.truth;
              d["predicted"] = c.predicted;
              d["nearest_id"] = r.shown.ids[nb];
              d["nearest_source"] = r.shown.sources[nb];
              d["distance"] = c.neighbors.front().distance;
              out.append(d);
            }
            return out;
          },
          "Every wrong answer: id (None for a held-out query), source, truth, predicted, "
          "nearest_id, nearest_source, distance.")
      .def("to_html", &ReportToHtml, py::arg("path"),
           "Writes the self-contained HTML report of `nearlabel eval --report`.")
      .def("__repr__", [](const PyReport& r) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "Report(%s: N = %zu, correct = %zu, accuracy = %.2f%%)",
                      r.protocol.c_str(), r.report.n, r.report.correct, 100 * r.report.accuracy);
        return std::string(buf);
      });
}

void BindCollection(py::module_& m) {
  py::class_<PyCollection>(m, "Collection",
                           "A store opened for searching (nearlabel.open). Thread-safe: "
                           "several threads may classify at once.")
      .def_property_readonly("location", &PyCollection::location)
      .def("__len__", &PyCollection::size, "Live rows.")
      .def("info", &PyCollection::Info,
           "Model, dims, label field, rows, index rows and lag, segment file, change id.")
      .def(
          "classify",
          [](PyCollection& c, py::handle images, int k, const std::string& vote,
             std::optional<std::string> within, std::optional<std::string> where, bool reject,
             double reject_quantile, std::optional<std::string> label, bool exact, int ef,
             const std::string& on_error, const std::string& confidence) {
            return c.Query(images, true, k, vote, within, where, reject, reject_quantile, label,
                           exact, ef, on_error, confidence);
          },
          py::arg("images"), py::kw_only(), py::arg("k") = 5, py::arg("vote") = "majority",
          py::arg("within") = py::none(), py::arg("where") = py::none(), py::arg("reject") = false,
          py::arg("reject_quantile") = 0.97, py::arg("label") = py::none(),
          py::arg("exact") = false, py::arg("ef") = 0, py::arg("on_error") = "raise",
          py::arg("confidence") = "calibrated",
          R"(Labels images by their k nearest neighbours, as `nearlabel classify` does.

images: a path, bytes of an image file, a numpy uint8 HxWx3 RGB array, or a list of them.
vote: 'majority', 'distance' (1/d) or 'softmax'. within: 'FIELD=VALUE' (only rows with that
label field value). where: an SQL condition on `items` (read-only). reject: open set, answer
'unknown' past the class's leave-one-out distance quantile. label: the field to predict.
exact: scan every row instead of the index; ef: the HNSW candidate list.
on_error: 'raise' (default) or 'keep' (an ImageError in the failed image's place).
confidence: 'calibrated' (default: the label's probability from a temperature fitted by
leave-one-out on the store, cached there) or 'vote' (the winning label's share of the vote).
Returns a Classification, or a list of them for a list of images.)")
      .def(
          "search",
          [](PyCollection& c, py::handle images, int k, std::optional<std::string> within,
             std::optional<std::string> where, std::optional<std::string> label, bool exact, int ef,
             const std::string& on_error) {
            return c.Query(images, false, k, "majority", within, where, false, 0.97, label, exact,
                           ef, on_error);
          },
          py::arg("images"), py::kw_only(), py::arg("k") = 10, py::arg("within") = py::none(),
          py::arg("where") = py::none(), py::arg("label") = py::none(), py::arg("exact") = false,
          py::arg("ef") = 0, py::arg("on_error") = "raise",
          "The k stored images nearest to each image (`nearlabel search`); options as classify.")
      .def("evaluate", &PyCollection::Evaluate, py::kw_only(), py::arg("label") = py::none(),
           py::arg("within") = py::none(), py::arg("group_by") = py::none(), py::arg("k") = 1,
           py::arg("vote") = "majority", py::arg("where") = py::none(),
           py::arg("queries") = py::none(), py::arg("query_label") = py::none(),
           py::arg("layout") = "auto",
           R"(Evaluates as `nearlabel eval`: leave-one-out over the store's rows (each labelled by
its nearest *other* rows; within: only rows sharing that field; group_by: never a row of the
same group), or with queries=DATASET a held-out labelled dataset classified as classify would.
Returns a Report (accuracy, per_class, confusion as numpy, mismatches, to_html).)")
      .def("vectors", &PyCollection::Vectors,
           "Every live row's vector, in id order: a read-only float32 numpy array (rows, dims) "
           "over the memory-mapped segment, no copy. Rows committed since are folded in first.")
      .def("ids", &PyCollection::Ids, "The row ids of vectors(), int64, read-only, no copy.")
      .def("metadata", &PyCollection::Metadata, "Each row's metadata (a dict), as ids().")
      .def("refresh", &PyCollection::Refresh,
           "Applies rows other processes committed since; returns how many changes.")
      .def(
          "ingest",
          [](PyCollection& c, py::object dataset, std::optional<std::string> model,
             const std::string& layout, int batch, bool index,
             std::optional<std::vector<std::string>> models, py::object progress) {
            py::dict d =
                IngestInto(c.location(), dataset, model, layout, batch, index, models, progress);
            c.Refresh();
            return d;
          },
          py::arg("dataset"), py::kw_only(), py::arg("model") = py::none(),
          py::arg("layout") = "auto", py::arg("batch") = 32, py::arg("index") = false,
          py::arg("models") = py::none(), py::arg("progress") = py::none(),
          "nearlabel.ingest into this collection's store; its rows are searched at once.")
      .def("__repr__",
           [](const PyCollection& c) {
             return "<nearlabel.Collection " + MaskedLocation(c.location()) + ", " +
                    std::to_string(c.size()) + " rows>";
           })
      .def("__enter__", [](PyCollection& c) -> PyCollection& { return c; })
      .def("__exit__", [](PyCollection&, py::args) { return false; });
}

// open, ingest, embed, models.
void BindFunctions(py::module_& m) {
  m.def(
      "open",
      [](py::object location, std::optional<std::vector<std::string>> models, bool exact) {
        const std::string loc = py::str(py::module_::import("os").attr("fspath")(location));
        return std::make_unique<PyCollection>(loc, Dirs(models), exact);
      },
      py::arg("location"), py::kw_only(), py::arg("models") = py::none(), py::arg("exact") = false,
      "Opens a store (a SQLite path or a postgresql:// URI) for searching. Reads no vector: "
      "the segment and the index are mapped. exact=True never uses the index.");
  m.def("ingest", &IngestInto, py::arg("store"), py::arg("dataset"), py::kw_only(),
        py::arg("model") = py::none(), py::arg("layout") = "auto", py::arg("batch") = 32,
        py::arg("index") = false, py::arg("models") = py::none(), py::arg("progress") = py::none(),
        R"(Embeds a labelled dataset into a store (created if missing), as `nearlabel ingest`:
idempotent (images already stored are skipped), a store's index kept up to date (index=True
builds one). layout: 'auto', 'aihub', 'folder' or 'manifest'. progress(done, total) is called
after each batch; an exception it raises stops the ingest after that batch and is re-raised.
Returns a dict: listed, inserted, already_stored, duplicates, failed, problems, seconds, index.)");
  m.def("embed", &Embed, py::arg("images"), py::kw_only(), py::arg("model") = kDefaultModel,
        py::arg("models") = py::none(),
        "Feature vectors of images (paths, bytes, numpy HxWx3 uint8 RGB): float32 (n, dims), "
        "unit length; (dims,) for one image.");
  m.def("models", &Models, py::kw_only(), py::arg("models") = py::none(),
        "The models nearlabel can find: name, dims, description, card, onnx, patches.");
}

}  // namespace
}  // namespace nearlabel::python

PYBIND11_MODULE(nearlabel, m) {
  using namespace nearlabel::python;
  using namespace nearlabel;
  m.doc() = R"(nearlabel: classify images by vector search.

A pretrained CNN turns every labelled image into a feature vector; vectors and label
metadata go into a store (one SQLite file, or a PostgreSQL database); a new image gets the
label of its nearest labelled neighbours. No training: adding a class is an insert.

    import nearlabel
    report = nearlabel.ingest("tiles.db", "datasets/magnetic-tile-aihub")
    tiles = nearlabel.open("tiles.db")
    tiles.evaluate(label="quality", within="part").accuracy
    r = tiles.classify("new-photo.jpg", k=5)       # or bytes, or a numpy HxWx3 RGB array
    r.label, r.confidence, r.neighbors[0].distance
    X = tiles.vectors()                            # (rows, dims) float32, no copy

Images are paths, bytes of an image file, or numpy uint8 arrays HxWx3 in RGB order (HxW
grey too); a list (or an NxHxWx3 array) gives a list of results. Models are looked up in
NEARLABEL_MODELS (or `models=[dir, ...]`). Errors raise nearlabel.Error subclasses with the
messages of the `nearlabel` command. The GIL is released while images are decoded, embedded
and searched, so threads run concurrently. See docs/python.md.)";
  RegisterErrors(m);
  BindAnswers(m);
  BindReport(m);
  BindCollection(m);
  BindFunctions(m);
}
