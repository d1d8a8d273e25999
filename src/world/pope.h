#pragma once
// POPE question sampling for one evaluation scene (Li et al., EMNLP 2023, §3): positives are
// objects in the image; negatives are absent classes chosen uniformly (random), by frequency
// (popular) or by co-occurrence with the objects present (adversarial).
#include <vector>

#include "world/random.h"
#include "world/scene.h"

namespace p2dpo::world {

struct PopeSample {
  std::vector<int> positives;  // object indices, shared by the three splits
  // Absent classes, as many as positives (fewer only if too few classes are absent).
  std::vector<int> random, popular, adversarial;
};

// k = min(per_image, objects present). random: k classes uniformly among the absent ones; popular:
// the k most popular absent classes (vocabulary popularity ranking); adversarial: absent partners of
// the present objects first (most popular partner first), then the most popular absent classes; the
// designed co-occurrence of two non-partner classes follows their popularity, so this is POPE's
// "rank by co-occurrence with the ground-truth objects" for this world.
PopeSample sample_pope(const Scene& scene, const Vocabulary& vocab, int per_image, Rng& rng);

}  // namespace p2dpo::world
