#include "collection/answer_json.h"

#include "common/json.h"

namespace nearlabel {

nlohmann::json AnswerJson(const Collection::Classified& c, const AnswerJsonOptions& o) {
  using nlohmann::json;
  json neighbors = json::array();
  for (size_t i = 0; i < c.answer.neighbors.size(); ++i) {
    const AnswerRow& r = c.answer.neighbors[i];
    json nb = {{"id", r.id},
               {"distance", r.distance},
               {"label", i < c.labels.size() ? c.labels[i] : std::string()},
               {"source", o.source ? o.source(r.source) : r.source},
               {"metadata", ParseJson(r.metadata)}};
    if (o.decorate) o.decorate(r.id, &nb);
    neighbors.push_back(std::move(nb));
  }
  json body = {{"neighbors", neighbors},
               {"plan", c.answer.plan},
               {"k", o.k},
               {"label_field", o.label_field}};
  if (!o.classify) return body;
  body["label"] = c.prediction.label;
  body["confidence"] = c.prediction.confidence;
  body["confidence_calibrated"] = c.calibrated;
  body["vote_share"] = c.vote_share;
  body["unknown"] = c.unknown;
  body["vote"] = VoteName(o.vote);
  json scores = json::array();
  for (const auto& [label, score] : c.prediction.scores) {
    scores.push_back({{"label", label}, {"score", score}});
  }
  body["scores"] = scores;
  if (c.reject_threshold >= 0) body["reject_threshold"] = c.reject_threshold;
  if (c.unknown) {
    body["voted_label"] = c.voted_label;
    body["rejected_why"] = c.rejected_why;
  }
  return body;
}

}  // namespace nearlabel
