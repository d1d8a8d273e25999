#pragma once
// The demo's results.json and its before/after terminal table, built from the evaluators' result
// files under DEMO_DIR/eval/<variant>/<benchmark>/results.json (pope, chair, afr, ips). Missing
// files leave their metrics null; nothing here runs a model.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace p2dpo::eval {

// One row per metric the paper's claims are about, one column per variant (in `variants` order):
//   {"variants": [...], "metrics": [{"key", "label", "better": "higher"|"lower"|"closer_to_50",
//    "values": {variant: number|null}}], "claims": [...], "sources": {variant: {benchmark: path}}}.
// "claims" checks the paper's claims on p2dpo vs base (and vs the baselines and ablations present):
// each {"claim", "holds": bool|null (null = a value is missing), "detail"}.
nlohmann::json summarize_demo(const std::string& demo_dir, const std::vector<std::string>& variants);

// A fixed-width table of summarize_demo's metrics (values in %, deltas vs "base" in brackets) and
// its claims, for the terminal.
std::string format_demo_table(const nlohmann::json& summary);

}  // namespace p2dpo::eval
