#pragma once
// Portable pseudo-random helpers for training. std::mt19937_64's output sequence is fixed by the
// C++ standard, but std::uniform_int_distribution & co. are not (libstdc++ and libc++ differ), so
// bounded integers are drawn here with an explicit rejection rule: the same seed gives the same
// data order on any machine.
#include <cstdint>
#include <random>
#include <string>

#include <torch/types.h>

namespace p2dpo::train {

// SplitMix64 finaliser: a well-mixed 64-bit hash, used to derive independent seeds from
// (seed, epoch) and similar pairs.
uint64_t splitmix64(uint64_t x);
uint64_t derive_seed(uint64_t seed, uint64_t stream);

// Uniform integer in [0, n), n >= 1, by rejection (no modulo bias).
uint64_t uniform_below(std::mt19937_64& rng, uint64_t n);

// Uniform double in [0, 1) from the top 53 bits.
double uniform_unit(std::mt19937_64& rng);

// The standard text form of the engine state (operator<< / operator>>, defined by the standard).
std::string rng_state_string(const std::mt19937_64& rng);
// InputError(where, ...) if the text is not a valid mt19937_64 state.
std::mt19937_64 rng_from_state_string(const std::string& state, const std::string& where);

// libtorch's default CPU generator (dropout, torch::rand...) as bytes, and back. The state is
// libtorch's own byte layout (CPUGeneratorImpl::get_state), stable within one libtorch version.
std::string torch_cpu_rng_state();
// InputError(where, ...) when the byte count does not match this libtorch's state size.
void set_torch_cpu_rng_state(const std::string& bytes, const std::string& where);

// Lower-case hex, for putting binary state into JSON.
std::string to_hex(const std::string& bytes);
std::string from_hex(const std::string& hex, const std::string& where);

}  // namespace p2dpo::train
