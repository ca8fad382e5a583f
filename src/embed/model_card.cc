#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <set>
#include <sstream>
#include <type_traits>

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include "common/fs.h"
#include "common/json.h"
#include "common/sha256.h"
#include "nearlabel/model.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace nearlabel {
namespace {

Status Field(const json& obj, const char* key, const std::string& where, std::string* out,
             bool required) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    return required ? Status::InvalidArgument(where + ": missing \"" + key + "\"") : Status::OK();
  }
  if (!it->is_string())
    return Status::InvalidArgument(where + ": \"" + key + "\" must be a string");
  *out = it->get<std::string>();
  return Status::OK();
}

template <typename T>
Status Number(const json& obj, const char* key, const std::string& where, T* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return Status::OK();
  if (!it->is_number())
    return Status::InvalidArgument(where + ": \"" + key + "\" must be a number");
  // Range-checked in double first: converting 1e19 to int is undefined behaviour (found by
  // the fuzzer), and 3.5 pixels is a mistake, not 3.
  const double v = it->get<double>();
  if constexpr (std::is_integral_v<T>) {
    if (!(v >= std::numeric_limits<T>::min() && v <= std::numeric_limits<T>::max()) ||
        v != std::floor(v)) {
      return Status::InvalidArgument(where + ": \"" + key + "\" must be an integer in range, not " +
                                     it->dump());
    }
  } else {
    if (!std::isfinite(v) || std::fabs(v) > std::numeric_limits<T>::max()) {
      return Status::InvalidArgument(where + ": \"" + key + "\" must be a finite number, not " +
                                     it->dump());
    }
  }
  *out = static_cast<T>(v);
  return Status::OK();
}

Status Triple(const json& obj, const char* key, const std::string& where, float out[3]) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return Status::OK();
  if (!it->is_array() || it->size() != 3) {
    return Status::InvalidArgument(where + ": \"" + key + "\" must be an array of 3 numbers");
  }
  for (int i = 0; i < 3; ++i) {
    if (!(*it)[i].is_number() || !std::isfinite((*it)[i].get<double>()) ||
        std::fabs((*it)[i].get<double>()) > std::numeric_limits<float>::max()) {
      return Status::InvalidArgument(where + ": \"" + key + "\" must be an array of 3 numbers");
    }
    out[i] = (*it)[i].get<float>();
  }
  return Status::OK();
}

std::string FindOnnx(const ModelCard& card, const std::vector<std::string>& dirs) {
  std::error_code ec;
  fs::path file(card.file);
  if (file.is_absolute()) return fs::exists(file, ec) ? file.string() : "";
  std::vector<fs::path> candidates{fs::path(card.card_path).parent_path() / file};
  for (const auto& d : dirs) {
    candidates.push_back(fs::path(d) / card.name / file);
    candidates.push_back(fs::path(d) / file);
  }
  for (const auto& c : candidates) {
    if (fs::is_regular_file(c, ec)) return c.string();
  }
  return "";
}

Result<PreprocessSpec::Resize> ParseResize(const std::string& name, const std::string& where) {
  if (name == "shorter_side_crop") return PreprocessSpec::Resize::kShorterSideCrop;
  if (name == "direct") return PreprocessSpec::Resize::kDirect;
  return Status::InvalidArgument(where + ": resize must be \"shorter_side_crop\" or \"direct\"");
}

Result<EmbeddingOptions> EmbeddingFromJson(const json& j, const std::string& where) {
  if (!j.is_object())
    return Status::InvalidArgument(where + ": embedding options must be an object");
  for (const auto& [key, value] : j.items()) {
    if (key != "resize" && key != "flip_average" && key != "power" && key != "centre") {
      return Status::InvalidArgument(where + ": unknown embedding option \"" + key +
                                     "\" (known: resize, flip_average, power, centre)");
    }
  }
  EmbeddingOptions e;
  NL_RETURN_IF_ERROR(Field(j, "resize", where, &e.resize, false));
  if (!e.resize.empty()) NL_RETURN_IF_ERROR(ParseResize(e.resize, where).status());
  for (auto [key, out] : {std::pair{"flip_average", &e.flip_average}, {"centre", &e.centre}}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_boolean()) {
      return Status::InvalidArgument(where + ": \"" + key + "\" must be true or false");
    }
    *out = it->get<bool>();
  }
  NL_RETURN_IF_ERROR(Number(j, "power", where, &e.power));
  if (!(e.power > 0 && e.power <= 1)) {
    return Status::InvalidArgument(where + ": \"power\" must be within (0, 1]");
  }
  return e;
}

Result<ModelCard> LoadCard(const fs::path& path, const std::vector<std::string>& dirs) {
  NL_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path.string(), 1 << 20));
  NL_ASSIGN_OR_RETURN(ModelCard card, ParseModelCard(text, path.string()));
  card.onnx_path = FindOnnx(card, dirs);
  return card;
}

}  // namespace

Result<ModelCard> ParseModelCard(const std::string& text, const std::string& card_path) {
  const std::string& where = card_path;
  bool too_deep = false;
  json j = ParseJson(text, &too_deep);
  if (too_deep) return Status::InvalidArgument(where + ": " + JsonTooDeepMessage());
  if (j.is_discarded() || !j.is_object()) {
    return Status::InvalidArgument(where + ": model card is not a JSON object");
  }
  ModelCard c;
  c.card_path = card_path;
  NL_RETURN_IF_ERROR(Field(j, "name", where, &c.name, true));
  NL_RETURN_IF_ERROR(Field(j, "file", where, &c.file, true));
  NL_RETURN_IF_ERROR(Field(j, "sha256", where, &c.sha256, false));
  NL_RETURN_IF_ERROR(Field(j, "description", where, &c.description, false));
  if (c.name.empty() || c.name.find('/') != std::string::npos) {
    return Status::InvalidArgument(where + ": \"name\" must be non-empty without '/'");
  }
  const json empty = json::object();
  auto section = [&](const char* key) -> Result<const json*> {
    auto it = j.find(key);
    if (it == j.end()) return &empty;
    if (!it->is_object())
      return Status::InvalidArgument(where + ": \"" + key + "\" must be an object");
    return &*it;
  };
  NL_ASSIGN_OR_RETURN(const json* input, section("input"));
  NL_ASSIGN_OR_RETURN(const json* pre, section("preprocess"));
  NL_ASSIGN_OR_RETURN(const json* feature, section("feature"));
  if (feature->empty()) return Status::InvalidArgument(where + ": missing \"feature\" section");

  NL_RETURN_IF_ERROR(Field(*input, "name", where + " input", &c.input_name, false));
  PreprocessSpec& p = c.preprocess;
  NL_RETURN_IF_ERROR(Number(*input, "width", where + " input", &p.width));
  NL_RETURN_IF_ERROR(Number(*input, "height", where + " input", &p.height));
  NL_RETURN_IF_ERROR(Number(*input, "max_batch", where + " input", &c.max_batch));
  if (p.width < 8 || p.height < 8 || p.width > 4096 || p.height > 4096) {
    return Status::InvalidArgument(where + ": input width/height must be within 8..4096");
  }
  if (c.max_batch < 0) return Status::InvalidArgument(where + ": max_batch must be >= 0");
  NL_RETURN_IF_ERROR(Number(*input, "run_batch", where + " input", &c.run_batch));
  if (c.run_batch < 0 || c.run_batch > 1024) {
    return Status::InvalidArgument(where + ": run_batch must be within 0..1024 (0: default)");
  }

  std::string resize = "shorter_side_crop", interp = "linear", order = "RGB";
  NL_RETURN_IF_ERROR(Field(*pre, "resize", where + " preprocess", &resize, false));
  NL_RETURN_IF_ERROR(Field(*pre, "interpolation", where + " preprocess", &interp, false));
  NL_RETURN_IF_ERROR(Field(*pre, "channel_order", where + " preprocess", &order, false));
  NL_ASSIGN_OR_RETURN(p.resize, ParseResize(resize, where));
  c.preprocess_resize = resize;
  p.resize_shorter = std::max(p.width, p.height) * 256 / 224;
  NL_RETURN_IF_ERROR(Number(*pre, "resize_shorter", where + " preprocess", &p.resize_shorter));
  if (p.resize_shorter < std::min(p.width, p.height) || p.resize_shorter > 8192) {
    return Status::InvalidArgument(where + ": resize_shorter must be >= the input size");
  }
  if (interp == "linear") {
    p.interpolation = cv::INTER_LINEAR;
  } else if (interp == "area") {
    p.interpolation = cv::INTER_AREA;
  } else if (interp == "cubic") {
    p.interpolation = cv::INTER_CUBIC;
  } else if (interp == "nearest") {
    p.interpolation = cv::INTER_NEAREST;
  } else {
    return Status::InvalidArgument(where +
                                   ": interpolation must be linear, area, cubic or nearest");
  }
  if (order != "RGB" && order != "BGR") {
    return Status::InvalidArgument(where + ": channel_order must be \"RGB\" or \"BGR\"");
  }
  p.rgb = order == "RGB";
  NL_RETURN_IF_ERROR(Number(*pre, "scale", where + " preprocess", &p.scale));
  NL_RETURN_IF_ERROR(Triple(*pre, "mean", where + " preprocess", p.mean));
  NL_RETURN_IF_ERROR(Triple(*pre, "std", where + " preprocess", p.std));
  for (float s : p.std) {
    if (!(s > 0)) return Status::InvalidArgument(where + ": std values must be > 0");
  }

  NL_RETURN_IF_ERROR(
      Field(*feature, "onnx_tensor", where + " feature", &c.feature_onnx_tensor, false));
  NL_RETURN_IF_ERROR(
      Field(*feature, "opencv_layer", where + " feature", &c.feature_opencv_layer, false));
  NL_RETURN_IF_ERROR(Field(*feature, "pooling", where + " feature", &c.pooling, false));
  NL_RETURN_IF_ERROR(Number(*feature, "dims", where + " feature", &c.dims));
  if (c.feature_onnx_tensor.empty() && c.feature_opencv_layer.empty()) {
    return Status::InvalidArgument(where + ": feature needs \"onnx_tensor\" or \"opencv_layer\"");
  }
  if (c.pooling != "mean" && c.pooling != "none") {
    return Status::InvalidArgument(where + ": feature pooling must be \"mean\" or \"none\"");
  }
  if (c.dims <= 0 || c.dims > 65536) {
    return Status::InvalidArgument(where + ": feature dims must be within 1..65536");
  }

  NL_ASSIGN_OR_RETURN(const json* patch, section("patch"));
  c.patch_preprocess = c.preprocess;
  if (!patch->empty()) {
    const std::string pw = where + " patch";
    NL_RETURN_IF_ERROR(Field(*patch, "onnx_tensor", pw, &c.patch_onnx_tensor, true));
    NL_RETURN_IF_ERROR(Number(*patch, "dims", pw, &c.patch_dims));
    NL_RETURN_IF_ERROR(Number(*patch, "grid", pw, &c.patch_grid));
    std::string patch_resize;
    NL_RETURN_IF_ERROR(Field(*patch, "resize", pw, &patch_resize, false));
    if (c.patch_onnx_tensor.empty()) {
      return Status::InvalidArgument(pw + ": \"onnx_tensor\" must name the feature map");
    }
    if (c.patch_dims <= 0 || c.patch_dims > 65536 || c.patch_grid <= 0 || c.patch_grid > 512) {
      return Status::InvalidArgument(pw + ": dims must be within 1..65536 and grid within 1..512");
    }
    if (patch_resize == "direct") {
      c.patch_preprocess.resize = PreprocessSpec::Resize::kDirect;
    } else if (patch_resize == "shorter_side_crop") {
      c.patch_preprocess.resize = PreprocessSpec::Resize::kShorterSideCrop;
    } else if (!patch_resize.empty()) {
      return Status::InvalidArgument(pw + ": resize must be \"shorter_side_crop\" or \"direct\"");
    }
  }
  NL_ASSIGN_OR_RETURN(const json* embedding, section("embedding"));
  NL_ASSIGN_OR_RETURN(EmbeddingOptions e, EmbeddingFromJson(*embedding, where + " embedding"));
  return WithEmbeddingOptions(c, e);
}

std::string EmbeddingOptionsJson(const EmbeddingOptions& e) {
  json j = json::object();
  j["resize"] = e.resize;
  j["flip_average"] = e.flip_average;
  j["power"] = e.power;
  j["centre"] = e.centre;
  return j.dump();
}

Result<EmbeddingOptions> ParseEmbeddingOptions(const std::string& text, const std::string& where) {
  const json j = ParseJson(text);
  if (j.is_discarded()) return Status::InvalidArgument(where + ": embedding options are not JSON");
  return EmbeddingFromJson(j, where);
}

Result<ModelCard> WithEmbeddingOptions(const ModelCard& card, const EmbeddingOptions& e) {
  const std::string where = "model " + card.name + " embedding options";
  if (!(e.power > 0 && e.power <= 1)) {
    return Status::InvalidArgument(where + ": power must be within (0, 1]");
  }
  ModelCard c = card;
  c.embedding = e;
  c.embedding.resize = e.resize.empty() ? card.preprocess_resize : e.resize;
  // A card made in code (not parsed) may leave preprocess_resize empty: its resize stays.
  if (!c.embedding.resize.empty()) {
    NL_ASSIGN_OR_RETURN(c.preprocess.resize, ParseResize(c.embedding.resize, where));
  }
  return c;
}

Result<ModelCard> PatchFeatureCard(const ModelCard& card) {
  if (card.patch_onnx_tensor.empty()) {
    return Status::InvalidArgument("model " + card.name + " (" + card.card_path +
                                   ") has no \"patch\" section naming a patch feature map");
  }
  ModelCard p = card;
  p.feature_onnx_tensor = card.patch_onnx_tensor;
  p.feature_opencv_layer.clear();
  p.pooling = "patches";
  p.dims = card.patch_dims;
  p.preprocess = card.patch_preprocess;
  p.embedding = EmbeddingOptions{};  // patches are positions: neither mirrored nor pooled
  p.centre_mean.clear();
  return p;
}

std::string BuiltinCardsDir() {
  if (const char* env = std::getenv("NEARLABEL_CARDS")) return env;
  return NEARLABEL_CARDS_DIR;
}

std::vector<std::string> ModelSearchDirs(const std::vector<std::string>& override_dirs) {
  std::vector<std::string> dirs = override_dirs;
  if (dirs.empty()) {
    if (const char* env = std::getenv("NEARLABEL_MODELS")) {
      std::stringstream ss(env);
      std::string d;
      while (std::getline(ss, d, ':')) {
        if (!d.empty()) dirs.push_back(d);
      }
    }
  }
  dirs.push_back(BuiltinCardsDir());
  return dirs;
}

Result<ModelCard> FindModel(const std::string& name_or_path, const std::vector<std::string>& dirs) {
  std::error_code ec;
  fs::path arg(name_or_path);
  std::vector<fs::path> tried;
  auto found = [&](const fs::path& card) -> Result<ModelCard> {
    NL_ASSIGN_OR_RETURN(ModelCard c, LoadCard(card, dirs));
    if (c.onnx_path.empty()) {
      return Status::NotFound("model card " + card.string() + " names \"" + c.file +
                              "\", which is not beside the card nor in the models directories "
                              "(set NEARLABEL_MODELS or --models)");
    }
    return c;
  };
  const bool looks_like_path = name_or_path.find('/') != std::string::npos ||
                               LowerExtension(name_or_path) == "onnx" ||
                               LowerExtension(name_or_path) == "json";
  if (looks_like_path) {
    if (LowerExtension(name_or_path) == "json") {
      if (fs::is_regular_file(arg, ec)) return found(arg);
      return Status::NotFound("no model card at " + name_or_path);
    }
    if (!fs::is_regular_file(arg, ec)) return Status::NotFound("no model file at " + name_or_path);
    for (const fs::path& c :
         {fs::path(arg).replace_extension(".card.json"), arg.parent_path() / "card.json"}) {
      if (fs::is_regular_file(c, ec)) {
        NL_ASSIGN_OR_RETURN(ModelCard card, found(c));
        card.onnx_path = arg.string();
        return card;
      }
      tried.push_back(c);
    }
    return Status::NotFound("model " + name_or_path + " has no card: write " + tried[0].string() +
                            " (see docs/model-cards.md)");
  }
  for (const auto& d : dirs) {
    for (const fs::path& c :
         {fs::path(d) / name_or_path / (name_or_path + ".card.json"),
          fs::path(d) / name_or_path / "card.json", fs::path(d) / (name_or_path + ".card.json")}) {
      if (fs::is_regular_file(c, ec)) return found(c);
      tried.push_back(c);
    }
  }
  std::string msg = "no model named '" + name_or_path + "' (looked in";
  for (const auto& d : dirs) msg += " " + d;
  msg += "; `nearlabel models` lists what is there)";
  return Status::NotFound(msg);
}

std::vector<ModelCard> ListModels(const std::vector<std::string>& dirs,
                                  std::vector<std::string>* errors) {
  std::vector<ModelCard> out;
  std::set<std::string> names;
  for (const auto& d : dirs) {
    std::error_code ec;
    std::vector<fs::path> cards;
    for (fs::recursive_directory_iterator it(d, ec), end; !ec && it != end; it.increment(ec)) {
      if (it.depth() > 1) {
        it.disable_recursion_pending();
        continue;
      }
      std::string fn = it->path().filename().string();
      if (it->is_regular_file() &&
          (fn == "card.json" ||
           (fn.size() > 10 && fn.compare(fn.size() - 10, 10, ".card.json") == 0))) {
        cards.push_back(it->path());
      }
    }
    std::sort(cards.begin(), cards.end());
    for (const auto& c : cards) {
      auto card = LoadCard(c, dirs);
      if (!card.ok()) {
        if (errors) errors->push_back(card.status().message());
        continue;
      }
      if (names.insert(card->name).second) out.push_back(std::move(*card));
    }
  }
  return out;
}

Result<std::string> ReadModelFile(const ModelCard& card) {
  if (card.onnx_path.empty()) return Status::NotFound("model " + card.name + " has no ONNX file");
  NL_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(card.onnx_path));
  if (!card.sha256.empty()) {
    const std::string actual = Sha256Hex(bytes);
    if (actual != card.sha256) {
      return Status::Mismatch("checksum of " + card.onnx_path + " is " + actual +
                              ", the model card " + card.card_path + " expects " + card.sha256);
    }
  }
  return bytes;
}

}  // namespace nearlabel
