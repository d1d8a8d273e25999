#include "train/params.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <set>

namespace p2dpo::train {

std::map<std::string, torch::Tensor> select_trainable(const std::map<std::string, torch::Tensor>& all,
                                                      const std::function<bool(const std::string&)>& trainable) {
  std::set<const void*> wanted;
  for (const auto& [name, t] : all) {
    if (trainable(name)) wanted.insert(t.unsafeGetTensorImpl());
  }
  std::map<std::string, torch::Tensor> out;
  for (const auto& [name, t] : all) {
    const bool on = wanted.count(t.unsafeGetTensorImpl()) > 0;
    if (t.requires_grad() != on) t.set_requires_grad(on);
    if (on && trainable(name)) out.emplace(name, t);
  }
  return out;
}

std::function<bool(const std::string&)> name_prefix_predicate(std::vector<std::string> prefixes) {
  return [prefixes = std::move(prefixes)](const std::string& name) {
    for (const auto& p : prefixes) {
      if (name.rfind(p, 0) == 0) return true;
    }
    return false;
  };
}

int64_t count_elements(const std::map<std::string, torch::Tensor>& params) {
  std::set<const void*> seen;
  int64_t n = 0;
  for (const auto& [name, t] : params) {
    if (seen.insert(t.unsafeGetTensorImpl()).second) n += t.numel();
  }
  return n;
}

}  // namespace p2dpo::train
