#pragma once
// Training checkpoints: one directory per save, written whole or not at all.
//
//   <checkpoints_dir>/ckpt-00000120/
//     model.safetensors      trainable parameters by canonical name (frozen ones come from the base)
//     optimizer.safetensors  AdamW state: exp_avg.<name>, exp_avg_sq.<name>, step.<name>
//     state.json             the manifest: format, step, data position and seed, RNG states (the
//                            trainer's mt19937_64 as text, libtorch's CPU generator as hex), elapsed
//                            time, optimizer config, file list, and the trainer's own "extra" JSON
//
// Atomicity: the files go to ckpt-XXXXXXXX.tmp/, are fsynced, and the directory is renamed; a crash
// leaves either the old set of checkpoints or the new one plus a stale .tmp that the next save
// removes. latest_checkpoint() only considers complete directories (with state.json). After a save
// the oldest complete checkpoints beyond keep_last are deleted.
//
// Resume contract (bit-identical continuation on CPU): restore the parameters, the optimizer, the
// step (the schedule is a function of it), the sampler position and the RNGs; then the next step
// sees exactly the data, learning rate, moments and random numbers it would have seen.
// Not covered: CUDA generator states (CPU runs are the bit-exact ones; GPU kernels are not
// deterministic anyway).
#include <torch/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>

#include <nlohmann/json.hpp>

#include "train/sampler.h"

namespace p2dpo::train {

class AdamW;

struct TrainState {
  int64_t step = 0;            // optimizer steps completed (= the scheduler's step)
  SamplerPosition data;        // where the next batch starts
  uint64_t data_seed = 0;      // the sampler's seed (checked on resume)
  std::mt19937_64 rng;         // the trainer's own PRNG (augmentation, noise...), saved as text
  double elapsed_s = 0.0;      // training wall time summed over all runs so far
  nlohmann::json extra = nlohmann::json::object();  // trainer-specific (config, stage, base model)
};

// Named tensors to a safetensors file (atomic; CPU copies; float32/bf16/f16/f64/int64/int32/uint8/bool).
void write_tensor_file(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});
// All tensors of a safetensors file as owned CPU tensors.
std::map<std::string, torch::Tensor> read_tensor_file(const std::string& path);

// "ckpt-00000120" for step 120.
std::string checkpoint_name(int64_t step);

// Writes <checkpoints_dir>/ckpt-<step> atomically (replacing one of the same step), then prunes to
// keep_last (>= 1) complete checkpoints. Also records libtorch's CPU generator state. Returns the
// directory written.
std::string save_checkpoint(const std::string& checkpoints_dir, const std::map<std::string, torch::Tensor>& params,
                            const AdamW& optimizer, const TrainState& state, int keep_last);

// The complete checkpoint with the highest step, or nullopt (no directory, or none complete).
std::optional<std::string> latest_checkpoint(const std::string& checkpoints_dir);

// Restores a checkpoint directory: parameters are copied in place into `params` (the names must be
// exactly the saved ones, with equal shapes), the optimizer state is replaced, libtorch's CPU
// generator is set, and the state is returned. InputError(<file>, ...) on any mismatch.
TrainState load_checkpoint(const std::string& checkpoint_dir, const std::map<std::string, torch::Tensor>& params,
                           AdamW& optimizer);

// The manifest alone (for inspection and for a trainer to check its config before loading).
nlohmann::json read_checkpoint_manifest(const std::string& checkpoint_dir);

}  // namespace p2dpo::train
