#include "world/pope.h"

#include <algorithm>

namespace p2dpo::world {

PopeSample sample_pope(const Scene& scene, const Vocabulary& vocab, int per_image, Rng& rng) {
  PopeSample s;
  std::vector<int> present(scene.objects.size());
  for (size_t i = 0; i < present.size(); ++i) present[i] = static_cast<int>(i);
  rng.shuffle(present);
  const size_t k = std::min(present.size(), static_cast<size_t>(std::max(per_image, 0)));
  s.positives.assign(present.begin(), present.begin() + static_cast<std::ptrdiff_t>(k));

  std::vector<int> absent;  // in popularity order
  for (int cls : vocab.by_popularity)
    if (scene.find_class(cls) < 0) absent.push_back(cls);
  const size_t kn = std::min(k, absent.size());

  std::vector<int> shuffled = absent;
  rng.shuffle(shuffled);
  s.random.assign(shuffled.begin(), shuffled.begin() + static_cast<std::ptrdiff_t>(kn));
  s.popular.assign(absent.begin(), absent.begin() + static_cast<std::ptrdiff_t>(kn));

  std::vector<int> ranked;  // absent partners (popularity order), then the rest by popularity
  for (int cls : absent) {
    const int p = vocab.partner[cls];
    if (p >= 0 && scene.find_class(p) >= 0) ranked.push_back(cls);
  }
  for (int cls : absent)
    if (std::find(ranked.begin(), ranked.end(), cls) == ranked.end()) ranked.push_back(cls);
  s.adversarial.assign(ranked.begin(), ranked.begin() + static_cast<std::ptrdiff_t>(kn));
  return s;
}

}  // namespace p2dpo::world
