// Selecting rows by label: what leave-one-out, calibration, rejection and the audit start from.
#pragma once

#include <string>
#include <vector>

#include "nearlabel/store.h"

namespace nearlabel {

// Labels of the rows (MetadataField of label_field; "" when missing).
std::vector<std::string> RowLabels(const VectorTable& table, const std::string& label_field);

// The rows `which` of `table` as a table of their own (sources kept when `table` has them).
VectorTable Subset(const VectorTable& table, const std::vector<size_t>& which);

// The rows of a table that have a label, as a table of their own, with each one's label, its
// `group_field` value ("" when none is asked or it has none) and its row in the input table.
struct LabelledRows {
  VectorTable table;
  std::vector<std::string> labels, groups;
  std::vector<size_t> rows;
};
LabelledRows SelectLabelled(const VectorTable& table, const std::string& label_field,
                            const std::string& group_field = "");

}  // namespace nearlabel
