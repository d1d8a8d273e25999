#pragma once
// Choosing what a run trains. Model parameters are plain tensors (models/layers.h); training a
// subset means setting requires_grad on those and handing them, by name, to the optimizer.
#include <torch/types.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace p2dpo::train {

// Sets requires_grad(trainable(name)) on every tensor of `all` and returns the trainable ones by
// name. A tensor under several names (tied embeddings) is trainable when any of its names is.
std::map<std::string, torch::Tensor> select_trainable(const std::map<std::string, torch::Tensor>& all,
                                                      const std::function<bool(const std::string&)>& trainable);

// A predicate true for names starting with any of `prefixes` (e.g. {"multi_modal_projector."} for
// LLaVA stage 1, {"multi_modal_projector.", "language_model."} for stage 2).
std::function<bool(const std::string&)> name_prefix_predicate(std::vector<std::string> prefixes);

// Number of elements over distinct tensors.
int64_t count_elements(const std::map<std::string, torch::Tensor>& params);

}  // namespace p2dpo::train
