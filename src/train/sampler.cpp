#include "train/sampler.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <numeric>
#include <random>

#include "train/rng.h"

namespace p2dpo::train {

EpochSampler::EpochSampler(int64_t dataset_size, uint64_t seed, bool shuffle, bool drop_last)
    : n_(dataset_size), seed_(seed), shuffle_(shuffle), drop_last_(drop_last) {
  TORCH_CHECK(dataset_size >= 1, "EpochSampler: the dataset is empty");
}

std::vector<int64_t> EpochSampler::epoch_order(int64_t epoch) const {
  std::vector<int64_t> order(static_cast<size_t>(n_));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (!shuffle_) return order;
  std::mt19937_64 rng(derive_seed(seed_, static_cast<uint64_t>(epoch)));
  for (size_t i = order.size() - 1; i > 0; --i) {  // Fisher-Yates, high to low
    const size_t j = static_cast<size_t>(uniform_below(rng, i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

std::vector<int64_t> EpochSampler::next_batch(int64_t batch_size) {
  TORCH_CHECK(batch_size >= 1, "EpochSampler: batch_size must be >= 1");
  TORCH_CHECK(!drop_last_ || batch_size <= n_, "EpochSampler: batch_size ", batch_size, " > dataset size ", n_,
              " with drop_last");
  if (pos_.index >= n_ || (drop_last_ && pos_.index + batch_size > n_)) {
    pos_.epoch += 1;
    pos_.index = 0;
  }
  if (cached_epoch_ != pos_.epoch) {
    order_ = epoch_order(pos_.epoch);
    cached_epoch_ = pos_.epoch;
  }
  const int64_t end = std::min(n_, pos_.index + batch_size);
  std::vector<int64_t> batch(order_.begin() + pos_.index, order_.begin() + end);
  pos_.index = end;
  return batch;
}

void EpochSampler::set_position(SamplerPosition pos) {
  TORCH_CHECK(pos.epoch >= 0 && pos.index >= 0, "EpochSampler: negative position");
  pos_ = pos;
}

int64_t EpochSampler::batches_per_epoch(int64_t batch_size) const {
  TORCH_CHECK(batch_size >= 1, "EpochSampler: batch_size must be >= 1");
  return drop_last_ ? n_ / batch_size : (n_ + batch_size - 1) / batch_size;
}

std::vector<int64_t> shard_batch(const std::vector<int64_t>& global_batch, int64_t rank, int64_t world_size) {
  TORCH_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "shard_batch: bad rank ", rank, " of ", world_size);
  std::vector<int64_t> out;
  for (size_t i = static_cast<size_t>(rank); i < global_batch.size(); i += static_cast<size_t>(world_size)) {
    out.push_back(global_batch[i]);
  }
  return out;
}

}  // namespace p2dpo::train
