#pragma once
// AdamW with decoupled weight decay over named parameters.
//
// Why our own and not torch::optim::AdamW: libtorch keys optimizer state by TensorImpl address and
// serialises it with torch::save archives, so a checkpoint cannot say which moment belongs to which
// parameter and is not readable outside libtorch. Here state is keyed by the canonical HF parameter
// name and saved as plain safetensors, the weight-decay groups come from a name rule, and the
// learning rate is an argument of step() (the schedule stays a pure function the loop calls).
// The arithmetic is libtorch 1.13's AdamW::step, operation for operation (tests compare the two
// bit for bit), which is also torch.optim.AdamW's single-tensor path:
//   p *= 1 - lr*wd;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;
//   p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
// Moments live on the parameter's device and dtype (as in torch).
#include <torch/types.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace p2dpo::train {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // applied only to parameters the decay rule selects
};

// HF Trainer / LLaVA / V-DPO rule: no weight decay for biases and normalisation weights. libtorch
// parameters here are plain tensors (no module types), so the rule reads the name: a name ending in
// "bias", or whose owning module's name contains "norm" (layer_norm, input_layernorm, norm, ...) or
// CLIP's misspelt "layrnorm" (pre_layrnorm).
bool is_no_decay_parameter(const std::string& name);

class AdamW {
 public:
  // `params` are the trainable tensors by name (each must be a leaf; requires_grad is set by the
  // caller). A tensor listed under two names (tied embeddings) is updated once, under the first name
  // in sorted order; the aliases are ignored. `no_decay` overrides is_no_decay_parameter.
  AdamW(const std::map<std::string, torch::Tensor>& params, AdamWConfig config,
        std::function<bool(const std::string&)> no_decay = is_no_decay_parameter);

  // One update with learning rate `lr`. Parameters without a gradient are skipped (their step count
  // does not advance), as in torch.
  void step(double lr);
  // Drops gradients (sets them undefined, torch's set_to_none=True).
  void zero_grad();

  const AdamWConfig& config() const { return config_; }
  // Names updated by this optimizer, sorted; and whether each one is decayed.
  std::vector<std::string> names() const;
  bool decays(const std::string& name) const;
  const std::map<std::string, torch::Tensor>& parameters() const { return params_; }

  // State as named tensors, for checkpoints: "exp_avg.<name>", "exp_avg_sq.<name>" (parameter dtype)
  // and "step.<name>" (int64 scalar). Parameters that never had a gradient have no entries. The
  // moments are the live tensors (the next step changes them): clone to keep a snapshot.
  std::map<std::string, torch::Tensor> state_tensors() const;
  // Replaces the state with `state` (as written by state_tensors). Unknown names, missing pieces or
  // shape mismatches throw InputError(where, ...). Tensors are copied to each parameter's device.
  void load_state_tensors(const std::map<std::string, torch::Tensor>& state, const std::string& where);

 private:
  struct Slot {
    torch::Tensor param;
    double weight_decay = 0.0;
    torch::Tensor exp_avg, exp_avg_sq;  // undefined until the first step with a gradient
    int64_t step = 0;
  };
  AdamWConfig config_;
  std::map<std::string, torch::Tensor> params_;
  std::map<std::string, Slot> slots_;
};

}  // namespace p2dpo::train
