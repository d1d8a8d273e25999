#pragma once
// Do the model's own pairs point the right way? The world knows the truth, P2-DPO never sees it;
// this check reads a finished `p2dpo pairs` run beside the world's ground truth (issue 4):
//   - faithfulness of each response: object classes it names that are present vs absent in the
//     scene; a pair "points right" when its chosen answer names fewer absent classes (or as many
//     and more present ones) than its rejected answer, "points wrong" in the reverse case;
//   - where the run recorded the model's own greedy answer on the plain view (focus.original), each
//     pair type's winner against it: a winner no more faithful than what the model already says
//     gives DPO nothing better to move toward;
//   - crop boxes: share containing (the centre of) an object the question is about, against the
//     share an equally sized box placed uniformly at random would contain (exact average).
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace p2dpo::world {

struct NamedClasses {
  int present = 0, absent = 0;  // distinct classes named
};

// Classes ("red circle", plural "red circles" too) named in `text`, judged against `present`.
NamedClasses named_classes(const std::string& text, const std::vector<std::string>& class_names,
                           const std::vector<std::string>& present);

// +1 chosen more faithful, -1 rejected more faithful, 0 neither.
int faithfulness_order(const NamedClasses& chosen, const NamedClasses& rejected);

// Share of placements of a w x h box inside W x H (top-left integer positions) whose box contains
// at least one of the points.
double random_box_hit_rate(int box_w, int box_h, int image_w, int image_h,
                           const std::vector<std::pair<double, double>>& points);

// Reads <pairs_dir>/pairs.jsonl, the world's world.json, scenes.jsonl and prompts/pairs_truth.jsonl.
// `kept_only`: only records the filter kept.
nlohmann::json pairs_sanity(const std::string& pairs_dir, const std::string& world_dir, bool kept_only);

}  // namespace p2dpo::world
