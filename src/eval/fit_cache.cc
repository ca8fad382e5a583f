#include "eval/fit_cache.h"

#include "common/json.h"

namespace nearlabel {

Result<std::optional<nlohmann::json>> ReadFitCache(Store& store, const std::string& key,
                                                   const std::string& signature) {
  NL_ASSIGN_OR_RETURN(std::string text, store.GetSetting(key));
  if (text.empty()) return std::optional<nlohmann::json>();
  nlohmann::json j = ParseJson(text);
  if (!j.is_object() || j.value("signature", "") != signature) {
    return std::optional<nlohmann::json>();
  }
  return std::optional<nlohmann::json>(std::move(j));
}

std::string WriteFitCache(const std::string& location, const std::string& key,
                          const std::string& signature, nlohmann::json entry, const char* verb) {
  entry["signature"] = signature;
  auto writable = OpenStore(location, Store::Mode::kReadWrite);
  const Status saved =
      writable.ok() ? (*writable)->PutSettings({{key, entry.dump()}}) : writable.status();
  return std::string(verb) + " (leave-one-out)" +
         (saved.ok() ? " and cached" : ", not cached: " + saved.message());
}

}  // namespace nearlabel
