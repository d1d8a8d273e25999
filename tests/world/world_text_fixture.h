#pragma once
// World-like sentences for the tokenizer and CLIP tests (the real ones come from `p2dpo world make`;
// these only need the same few dozen words and templates).
#include <string>
#include <vector>

namespace p2dpo::test {

inline const std::vector<std::string>& world_shapes() {
  static const std::vector<std::string> v = {"circle", "square", "triangle", "star"};
  return v;
}
inline const std::vector<std::string>& world_colors() {
  static const std::vector<std::string> v = {"red", "green", "blue", "yellow"};
  return v;
}

// Deterministic sentences: descriptions, existence questions with justified answers, relations,
// and the LLaVA chat template words.
inline std::vector<std::string> world_sentences() {
  std::vector<std::string> out;
  const auto& shapes = world_shapes();
  const auto& colors = world_colors();
  const char* sizes[] = {"small", "large"};
  int k = 0;
  for (const auto& s : shapes) {
    for (const auto& c : colors) {
      for (const char* z : sizes) {
        const std::string name = std::string(z) + " " + c + " " + s;
        const std::string other = std::string(sizes[(k + 1) % 2]) + " " + colors[(k + 1) % 4] + " " +
                                  shapes[(k + 2) % 4];
        out.push_back("A " + name + " and a " + other + ".");
        out.push_back("Is there a " + name + " in the image?");
        out.push_back("Yes, there is a " + name + " at the top left.");
        out.push_back("No, I see a " + other + ", but no " + name + ".");
        out.push_back("The " + name + " is left of the " + other + ".");
        out.push_back("What colour is the " + s + "? It is " + c + ".");
        out.push_back("USER: <image>\nDescribe the image. ASSISTANT: There are 2 objects: a " + name + " and a " +
                      other + ".");
        ++k;
      }
    }
  }
  return out;
}

}  // namespace p2dpo::test
