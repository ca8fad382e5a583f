#include "eval/labelled_rows.h"

#include "common/json.h"
#include "nearlabel/dataset.h"

namespace nearlabel {

std::vector<std::string> RowLabels(const VectorTable& table, const std::string& label_field) {
  std::vector<std::string> labels(table.size());
  for (size_t i = 0; i < table.size(); ++i) {
    labels[i] = MetadataField(ParseJson(table.metadata[i]), label_field);
  }
  return labels;
}

VectorTable Subset(const VectorTable& table, const std::vector<size_t>& which) {
  VectorTable t;
  t.dims = table.dims;
  const bool sources = table.sources.size() == table.size();
  for (size_t i : which) {
    t.ids.push_back(table.ids[i]);
    if (sources) t.sources.push_back(table.sources[i]);
    t.metadata.push_back(table.metadata[i]);
    t.vectors.insert(t.vectors.end(), table.row(i), table.row(i) + table.dims);
  }
  return t;
}

LabelledRows SelectLabelled(const VectorTable& table, const std::string& label_field,
                            const std::string& group_field) {
  LabelledRows out;
  for (size_t i = 0; i < table.size(); ++i) {
    const auto meta = ParseJson(table.metadata[i]);
    std::string label = MetadataField(meta, label_field);
    if (label.empty()) continue;
    out.labels.push_back(std::move(label));
    out.groups.push_back(group_field.empty() ? "" : MetadataField(meta, group_field));
    out.rows.push_back(i);
  }
  out.table = Subset(table, out.rows);
  return out;
}

}  // namespace nearlabel
