#pragma once
// Randomness for the world generator, bit-exact on every platform and standard library: splitmix64
// for seeding and stream derivation, xoshiro256** for draws, and our own integer transforms
// (std::uniform_int_distribution & co. are implementation-defined and differ between libraries).
// No floating point anywhere, so compilers that contract or reorder float math cannot change a file.
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace p2dpo::world {

// One splitmix64 step: advances `state` and returns the next output (Vigna's reference algorithm;
// state 1234567 gives 6457827717110365317 first).
inline uint64_t splitmix64_next(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A well-mixed 64-bit hash of `x` (one splitmix64 step from state x).
inline uint64_t mix64(uint64_t x) { return splitmix64_next(x); }

// The seed of an independent stream, e.g. (world seed, split, image index, purpose). Streams keyed
// this way make image i of a split independent of how many images the other splits have.
inline uint64_t derive_seed(uint64_t seed, uint64_t a, uint64_t b = 0, uint64_t c = 0) {
  return mix64(mix64(mix64(mix64(seed) ^ a) ^ b) ^ c);
}

// 64-bit FNV-1a of bytes: cheap content fingerprints (scene pixel hashes, stream keys from names).
inline uint64_t fnv1a64(const void* data, size_t size, uint64_t hash = 0xcbf29ce484222325ULL) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) hash = (hash ^ p[i]) * 0x100000001b3ULL;
  return hash;
}
inline uint64_t fnv1a64(const std::string& s) { return fnv1a64(s.data(), s.size()); }

// xoshiro256** seeded through splitmix64.
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (auto& word : s_) word = splitmix64_next(seed);
  }

  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // Uniform integer in [lo, hi] (inclusive; lo <= hi), without modulo bias (draws below
  // 2^64 mod range are rejected, as arc4random_uniform does).
  int64_t uniform(int64_t lo, int64_t hi) {
    const uint64_t range = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo) + 1;
    if (range == 0) return static_cast<int64_t>(next());  // the full 64-bit range
    const uint64_t threshold = (0 - range) % range;
    uint64_t x = next();
    while (x < threshold) x = next();
    return static_cast<int64_t>(static_cast<uint64_t>(lo) + x % range);
  }

  // True with probability numerator / denominator (0 <= numerator <= denominator, denominator > 0).
  bool chance(int64_t numerator, int64_t denominator) { return uniform(0, denominator - 1) < numerator; }

  // An index drawn with probability proportional to `weights` (entries of 0 are never drawn);
  // the weights must not all be 0.
  size_t weighted(const std::vector<uint64_t>& weights) {
    uint64_t total = 0;
    for (uint64_t w : weights) total += w;
    uint64_t r = static_cast<uint64_t>(uniform(0, static_cast<int64_t>(total - 1)));
    for (size_t i = 0; i < weights.size(); ++i) {
      if (r < weights[i]) return i;
      r -= weights[i];
    }
    return weights.size() - 1;  // unreachable when total > 0
  }

  // Fisher-Yates with our own uniform draws (std::shuffle's use of the engine is unspecified).
  template <typename T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[static_cast<size_t>(uniform(0, static_cast<int64_t>(i - 1)))]);
  }

  // An element of a non-empty vector, uniformly.
  template <typename T>
  const T& pick(const std::vector<T>& v) {
    return v[static_cast<size_t>(uniform(0, static_cast<int64_t>(v.size()) - 1))];
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

}  // namespace p2dpo::world
