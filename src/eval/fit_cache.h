// The cache of what is fitted by leave-one-out on a store's labelled rows (open-set
// thresholds, confidence calibration): JSON entries in the store's settings, each valid while
// the rows' LabelledRowsSignature is the one it was saved with.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "nearlabel/store.h"

namespace nearlabel {

// The entry under `key` when it was saved with `signature`; nullopt when there is none or it
// is stale or not a JSON object.
Result<std::optional<nlohmann::json>> ReadFitCache(Store& store, const std::string& key,
                                                   const std::string& signature);

// Saves `entry` under `key` with `signature`, through a read-write handle of `location`: a
// cache, so when that cannot be opened or written the fit stands, uncached. Returns what
// happened for -v: "<verb> (leave-one-out) and cached" or "... , not cached: why".
std::string WriteFitCache(const std::string& location, const std::string& key,
                          const std::string& signature, nlohmann::json entry, const char* verb);

inline constexpr const char* kFromFitCache = "from the store's cache";

}  // namespace nearlabel
