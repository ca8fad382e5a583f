// The one JSON shape of a classify or search answer, shared by `classify --json` /
// `search --json` and the server's /v1/classify and /v1/search (docs/api.md, "Answers").
#pragma once

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "nearlabel/collection.h"

namespace nearlabel {

struct AnswerJsonOptions {
  bool classify = true;  // add label, confidence, unknown, vote, scores
  std::string label_field;
  int k = 0;
  Vote vote = Vote::kMajority;
  // How a stored source path is shown (the server answers it relative to the common root).
  std::function<std::string(const std::string&)> source;
  // Extra fields per neighbour (the server's thumbnail URL); may be empty.
  std::function<void(int64_t id, nlohmann::json* neighbor)> decorate;
};

nlohmann::json AnswerJson(const Collection::Classified& c, const AnswerJsonOptions& o);

}  // namespace nearlabel
