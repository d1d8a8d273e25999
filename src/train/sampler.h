#pragma once
// Deterministic epoch-shuffled sampling with a resumable position.
//
// Epoch e's order is a Fisher-Yates permutation drawn from mt19937_64 seeded with
// derive_seed(seed, e), with portable bounded integers (train/rng.h): the same seed gives the same
// order on any machine, and the order of any epoch is computed without replaying earlier ones, so
// the position (epoch, index into the order) is all a checkpoint needs.
//
// Batches never span an epoch boundary: the last batch of an epoch is shorter unless drop_last
// (as torch's DataLoader). For data parallelism take one global batch and give each rank its
// strided share (shard_batch), so the position stays global and rank-independent.
#include <cstdint>
#include <vector>

namespace p2dpo::train {

struct SamplerPosition {
  int64_t epoch = 0;
  int64_t index = 0;  // next position in epoch `epoch`'s order
  bool operator==(const SamplerPosition& o) const { return epoch == o.epoch && index == o.index; }
};

class EpochSampler {
 public:
  // dataset_size >= 1. shuffle=false gives 0..n-1 every epoch.
  EpochSampler(int64_t dataset_size, uint64_t seed, bool shuffle = true, bool drop_last = false);

  // The next batch of up to batch_size dataset indices; advances the position (to the next epoch
  // when this one is used up).
  std::vector<int64_t> next_batch(int64_t batch_size);

  SamplerPosition position() const { return pos_; }
  // Positions come from our own checkpoints; an index at or past the end of the epoch simply
  // starts the next epoch at the next next_batch().
  void set_position(SamplerPosition pos);

  // Batches per epoch for this batch size (ceil, or floor with drop_last).
  int64_t batches_per_epoch(int64_t batch_size) const;
  int64_t dataset_size() const { return n_; }
  uint64_t seed() const { return seed_; }
  bool shuffle() const { return shuffle_; }
  bool drop_last() const { return drop_last_; }

  // The full order of epoch `epoch` (a pure function of seed and epoch).
  std::vector<int64_t> epoch_order(int64_t epoch) const;

 private:
  int64_t n_;
  uint64_t seed_;
  bool shuffle_, drop_last_;
  SamplerPosition pos_;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> order_;
};

// Rank `rank`'s share of a global batch: elements rank, rank + world, rank + 2*world, ...
std::vector<int64_t> shard_batch(const std::vector<int64_t>& global_batch, int64_t rank, int64_t world_size);

}  // namespace p2dpo::train
