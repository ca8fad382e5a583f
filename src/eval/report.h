// The HTML evaluation report (`nearlabel eval --report FILE`): one self-contained file (styles,
// charts as inline SVG, thumbnails as data: URIs), readable offline and attachable to a ticket.
#pragma once

#include <functional>
#include <string>

#include "nearlabel/classify.h"
#include "nearlabel/store.h"

namespace nearlabel {

struct EvalReportPage {
  std::string store;
  std::string model;
  std::string protocol;  // e.g. "leave-one-group-out by tile_group, neighbours within part"
  const EvalReport* report = nullptr;
  // The same evaluation without --group-by, for the "plain vs group-aware" comparison; null
  // when the evaluation is plain already.
  const EvalReport* plain = nullptr;
  const VectorTable* table = nullptr;  // the rows evaluated (report rows index it)
  // JPEG thumbnail of a row id, "" when there is none.
  std::function<std::string(int64_t)> thumbnail;
};

// Renders the page. The confusion matrix cells carry data-count attributes (the browser test
// checks that they sum to N).
std::string RenderEvalReport(const EvalReportPage& page);

}  // namespace nearlabel
