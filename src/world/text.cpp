#include "world/text.h"

#include <algorithm>
#include <set>

namespace p2dpo::world {

const char* direction_phrase(Direction d) {
  switch (d) {
    case Direction::LeftOf: return "to the left of";
    case Direction::RightOf: return "to the right of";
    case Direction::Above: return "above";
    case Direction::Below: return "below";
  }
  return "?";
}

namespace {
Direction opposite(Direction d) {
  switch (d) {
    case Direction::LeftOf: return Direction::RightOf;
    case Direction::RightOf: return Direction::LeftOf;
    case Direction::Above: return Direction::Below;
    case Direction::Below: return Direction::Above;
  }
  return d;
}
bool stored(const Scene& scene, int a, RelationKind kind, int b) {
  return std::any_of(scene.relations.begin(), scene.relations.end(),
                     [&](const Relation& r) { return r.subject == a && r.object == b && r.kind == kind; });
}
}  // namespace

bool holds(const Scene& scene, int a, Direction d, int b) {
  switch (d) {
    case Direction::LeftOf: return stored(scene, a, RelationKind::LeftOf, b);
    case Direction::RightOf: return stored(scene, b, RelationKind::LeftOf, a);
    case Direction::Above: return stored(scene, a, RelationKind::Above, b);
    case Direction::Below: return stored(scene, b, RelationKind::Above, a);
  }
  return false;
}

std::string number_word(int n) {
  static const char* words[] = {"zero", "one", "two",   "three", "four",   "five",  "six",
                                "seven", "eight", "nine", "ten",  "eleven", "twelve"};
  return (n >= 0 && n <= 12) ? words[n] : std::to_string(n);
}

std::string with_article(const std::string& noun_phrase) {
  return std::string(article_for(noun_phrase)) + " " + noun_phrase;
}

std::string join_list(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += (i + 1 == items.size()) ? " and " : ", ";
    out += items[i];
  }
  return out;
}

std::string full_name(const Vocabulary& vocab, const Object& o) {
  return std::string(size_name(o.size)) + " " + vocab.class_name(o.cls);
}

namespace {

std::string capitalize(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

std::string located(const Scene& scene, const Vocabulary& vocab, const Object& o) {
  return with_article(full_name(vocab, o)) + " " + kRegionPhrases[region_of(scene, o)];
}

std::vector<int> all_indices(const Scene& scene) {
  std::vector<int> v(scene.objects.size());
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<int>(i);
  return v;
}

// How to refer to objects[i] with a definite article: the shape alone when unique, else size +
// shape, else shape + position; "" when none of these is unique.
std::string reference_by_shape(const Scene& scene, const Vocabulary& vocab, int i) {
  const Object& o = scene.objects[i];
  int same_shape = 0, same_shape_size = 0, same_shape_region = 0;
  for (const auto& p : scene.objects) {
    if (p.shape != o.shape) continue;
    ++same_shape;
    if (p.size == o.size) ++same_shape_size;
    if (region_of(scene, p) == region_of(scene, o)) ++same_shape_region;
  }
  const std::string& shape = vocab.shapes[o.shape];
  if (same_shape == 1) return shape;
  if (same_shape_size == 1) return std::string(size_name(o.size)) + " " + shape;
  if (same_shape_region == 1) return shape + " " + kRegionPhrases[region_of(scene, o)];
  return "";
}

}  // namespace

std::string describe_scene(const Scene& scene, const Vocabulary& vocab) {
  const size_t n = scene.objects.size();
  if (n == 0) return "The image is empty.";
  if (n == 1) return "There is " + located(scene, vocab, scene.objects[0]) + ".";
  std::vector<std::string> parts;
  for (const auto& o : scene.objects) parts.push_back(located(scene, vocab, o));
  return "There are " + number_word(static_cast<int>(n)) + " objects: " + join_list(parts) + ".";
}

std::string caption_scene(const Scene& scene, const Vocabulary& vocab) {
  std::vector<std::string> parts;
  for (const auto& o : scene.objects) parts.push_back(with_article(full_name(vocab, o)));
  return join_list(parts);
}

std::string existence_question(const Vocabulary& vocab, int cls) {
  return "Is there " + with_article(vocab.class_name(cls)) + " in the image?";
}

QA description_qa(const Scene& scene, const Vocabulary& vocab, const std::string& question) {
  QA qa;
  qa.type = "description";
  qa.question = question;
  qa.answer = describe_scene(scene, vocab);
  qa.objects = all_indices(scene);
  return qa;
}

QA existence_qa(const Scene& scene, const Vocabulary& vocab, int cls, const std::string& question_template) {
  QA qa;
  qa.type = "existence";
  qa.asked_class = cls;
  const std::string name = vocab.class_name(cls);
  if (question_template.empty()) {
    qa.question = existence_question(vocab, cls);
  } else {
    qa.question = question_template;
    qa.question.replace(qa.question.find("{}"), 2, with_article(name));
  }
  const int found = scene.find_class(cls);
  if (found >= 0) {
    qa.answer = "Yes, there is " + located(scene, vocab, scene.objects[found]) + ".";
    qa.objects = {found};
    return qa;
  }
  std::vector<std::string> seen;
  for (const auto& o : scene.objects) seen.push_back(with_article(vocab.class_name(o.cls)));
  qa.answer = seen.empty() ? "No, there is no " + name + "." : "No, I see " + join_list(seen) + ", but no " + name + ".";
  qa.objects = all_indices(scene);
  return qa;
}

QA existence_short_qa(const Scene& scene, const Vocabulary& vocab, int cls) {
  QA qa;
  qa.type = "existence_short";
  qa.asked_class = cls;
  qa.question = existence_question(vocab, cls) + "\n" + kShortAnswerSuffix;
  const int found = scene.find_class(cls);
  qa.answer = found >= 0 ? "Yes" : "No";
  if (found >= 0) qa.objects = {found};
  return qa;
}

QA where_qa(const Scene& scene, const Vocabulary& vocab, int cls) {
  QA qa;
  qa.type = "where";
  qa.asked_class = cls;
  const std::string name = vocab.class_name(cls);
  qa.question = "Where is the " + name + "?";
  const int found = scene.find_class(cls);
  if (found >= 0) {
    qa.answer = "The " + name + " is " + kRegionPhrases[region_of(scene, scene.objects[found])] + ".";
    qa.objects = {found};
  } else {
    qa.answer = "There is no " + name + " in the image.";
  }
  return qa;
}

QA count_qa(const Scene& scene) {
  QA qa;
  qa.type = "count";
  qa.question = "How many objects are in the image?";
  const int n = static_cast<int>(scene.objects.size());
  qa.answer = n == 1 ? "There is one object." : "There are " + number_word(n) + " objects.";
  qa.objects = all_indices(scene);
  return qa;
}

QA region_qa(const Scene& scene, const Vocabulary& vocab, int region) {
  QA qa;
  qa.type = "region";
  qa.region = region;
  const std::string phrase = kRegionPhrases[region];
  qa.question = "What is " + phrase + " of the image?";
  std::vector<std::string> names;
  for (size_t i = 0; i < scene.objects.size(); ++i)
    if (region_of(scene, scene.objects[i]) == region) {
      qa.objects.push_back(static_cast<int>(i));
      names.push_back(with_article(full_name(vocab, scene.objects[i])));
    }
  if (names.empty()) qa.answer = "There is nothing " + phrase + ".";
  else if (names.size() == 1) qa.answer = "There is " + names[0] + " " + phrase + ".";
  else qa.answer = "There are " + number_word(static_cast<int>(names.size())) + " objects " + phrase + ": " + join_list(names) + ".";
  return qa;
}

QA size_qa(const Scene& scene, const Vocabulary& vocab, int object) {
  const Object& o = scene.objects[object];
  QA qa;
  qa.type = "size";
  const std::string name = vocab.class_name(o.cls);
  qa.question = "Is the " + name + " small or large?";
  qa.answer = "The " + name + " is " + size_name(o.size) + ".";
  qa.objects = {object};
  return qa;
}

QA color_qa(const Scene& scene, const Vocabulary& vocab, int object) {
  QA qa;
  qa.type = "color";
  const std::string ref = reference_by_shape(scene, vocab, object);
  if (ref.empty()) return qa;
  qa.question = "What color is the " + ref + "?";
  qa.answer = "The " + ref + " is " + vocab.colors[scene.objects[object].color] + ".";
  qa.objects = {object};
  return qa;
}

QA shape_qa(const Scene& scene, const Vocabulary& vocab, int object) {
  QA qa;
  qa.type = "shape";
  const Object& o = scene.objects[object];
  const bool unique_color = std::count_if(scene.objects.begin(), scene.objects.end(),
                                          [&](const Object& p) { return p.color == o.color; }) == 1;
  if (!unique_color) return qa;
  const std::string& color = vocab.colors[o.color];
  qa.question = "What shape is the " + color + " object?";
  qa.answer = "The " + color + " object is " + with_article(vocab.shapes[o.shape]) + ".";
  qa.objects = {object};
  return qa;
}

QA relation_qa(const Scene& scene, const Vocabulary& vocab, int object, Direction d) {
  QA qa;
  qa.type = "relation";
  const std::string name = vocab.class_name(scene.objects[object].cls);
  const std::string rel = direction_phrase(d);
  qa.question = "What is " + rel + " the " + name + "?";
  std::vector<std::string> names;
  for (size_t i = 0; i < scene.objects.size(); ++i)
    if (holds(scene, static_cast<int>(i), d, object)) {
      qa.objects.push_back(static_cast<int>(i));
      names.push_back("the " + full_name(vocab, scene.objects[i]));
    }
  if (names.empty()) qa.answer = "Nothing is " + rel + " the " + name + ".";
  else qa.answer = capitalize(join_list(names)) + (names.size() == 1 ? " is " : " are ") + rel + " the " + name + ".";
  qa.objects.push_back(object);
  return qa;
}

QA relation_yesno_qa(const Scene& scene, const Vocabulary& vocab, int a, int b, Direction d) {
  QA qa;
  qa.type = "relation_yesno";
  const bool yes = holds(scene, a, d, b), reverse = holds(scene, a, opposite(d), b);
  if (!yes && !reverse) return qa;  // no fact to state either way
  const std::string na = vocab.class_name(scene.objects[a].cls), nb = vocab.class_name(scene.objects[b].cls);
  qa.question = "Is the " + na + " " + direction_phrase(d) + " the " + nb + "?";
  qa.answer = yes ? "Yes, the " + na + " is " + direction_phrase(d) + " the " + nb + "."
                  : "No, the " + na + " is " + direction_phrase(opposite(d)) + " the " + nb + ".";
  qa.objects = {a, b};
  return qa;
}

int sample_negative_class(const Scene& scene, const Vocabulary& vocab, Rng& rng) {
  std::vector<int> absent, partners;
  std::vector<uint64_t> popular_weights(vocab.num_classes(), 0);
  for (int c = 0; c < vocab.num_classes(); ++c)
    if (scene.find_class(c) < 0) {
      absent.push_back(c);
      popular_weights[c] = vocab.base_weight[c];
    }
  if (absent.empty()) return -1;
  for (const auto& o : scene.objects) {
    const int p = vocab.partner[o.cls];
    if (p >= 0 && scene.find_class(p) < 0 && std::find(partners.begin(), partners.end(), p) == partners.end())
      partners.push_back(p);
  }
  const int64_t source = rng.uniform(0, 2);
  if (source == 0 && !partners.empty()) return rng.pick(partners);
  if (source == 1) return static_cast<int>(rng.weighted(popular_weights));
  return rng.pick(absent);
}

namespace {

const std::vector<std::string>& existence_templates() {
  static const std::vector<std::string> t = {"Is there {} in the image?", "Is there {} in the image?",
                                             "Is there {} in this image?", "Do you see {} in the image?"};
  return t;
}

const std::vector<Direction>& all_directions() {
  static const std::vector<Direction> d = {Direction::LeftOf, Direction::RightOf, Direction::Above, Direction::Below};
  return d;
}

int random_object(const Scene& scene, Rng& rng) {
  return static_cast<int>(rng.uniform(0, static_cast<int64_t>(scene.objects.size()) - 1));
}

// One question of the given type, or an empty question when the type does not apply to the scene.
QA draw_question(const std::string& type, const Scene& scene, const Vocabulary& vocab, Rng& rng) {
  const int n = static_cast<int>(scene.objects.size());
  if (type == "existence" || type == "existence_short") {
    int cls;
    if (rng.chance(1, 2) || scene.objects.size() == static_cast<size_t>(vocab.num_classes())) cls = scene.objects[random_object(scene, rng)].cls;
    else cls = sample_negative_class(scene, vocab, rng);
    if (type == "existence_short") return existence_short_qa(scene, vocab, cls);
    return existence_qa(scene, vocab, cls, rng.pick(existence_templates()));
  }
  if (type == "where") {
    // Mostly present objects; sometimes an absent class, answered "There is no ...".
    if (rng.chance(3, 4)) return where_qa(scene, vocab, scene.objects[random_object(scene, rng)].cls);
    const int cls = sample_negative_class(scene, vocab, rng);
    return cls < 0 ? QA{} : where_qa(scene, vocab, cls);
  }
  if (type == "color") return color_qa(scene, vocab, random_object(scene, rng));
  if (type == "shape") return shape_qa(scene, vocab, random_object(scene, rng));
  if (type == "size") return size_qa(scene, vocab, random_object(scene, rng));
  if (type == "count") return count_qa(scene);
  if (type == "region") {
    // Occupied cells three times out of four, so most answers name objects.
    std::vector<int> occupied;
    for (const auto& o : scene.objects) occupied.push_back(region_of(scene, o));
    const int region = rng.chance(3, 4) ? rng.pick(occupied) : static_cast<int>(rng.uniform(0, 8));
    return region_qa(scene, vocab, region);
  }
  if (type == "relation") {
    if (n < 2) return {};
    return relation_qa(scene, vocab, random_object(scene, rng), rng.pick(all_directions()));
  }
  if (type == "relation_yesno") {
    if (n < 2) return {};
    const int a = random_object(scene, rng);
    int b = random_object(scene, rng);
    if (a == b) return {};
    return relation_yesno_qa(scene, vocab, a, b, rng.pick(all_directions()));
  }
  return {};
}

std::vector<QA> draw_distinct(const Scene& scene, const Vocabulary& vocab, int count, Rng& rng,
                              const std::vector<std::string>& types, const std::vector<uint64_t>& weights) {
  std::vector<QA> out;
  std::set<std::string> asked;
  if (scene.objects.empty()) return out;
  for (int attempt = 0; attempt < 40 * count && static_cast<int>(out.size()) < count; ++attempt) {
    QA qa = draw_question(types[rng.weighted(weights)], scene, vocab, rng);
    if (qa.question.empty() || !asked.insert(qa.question).second) continue;
    out.push_back(std::move(qa));
  }
  return out;
}

}  // namespace

std::vector<QA> training_questions(const Scene& scene, const Vocabulary& vocab, int count, Rng& rng) {
  static const std::vector<std::string> types = {"existence", "existence_short", "color",    "shape",
                                                 "size",      "where",           "count",    "region",
                                                 "relation",  "relation_yesno"};
  static const std::vector<uint64_t> weights = {42, 8, 8, 6, 5, 8, 4, 8, 6, 5};
  return draw_distinct(scene, vocab, count, rng, types, weights);
}

std::vector<QA> open_prompts(const Scene& scene, const Vocabulary& vocab, int count, Rng& rng) {
  std::vector<QA> out;
  std::set<std::string> asked;
  static const std::vector<std::string> types = {"description", "region", "color", "where", "relation"};
  static const std::vector<uint64_t> weights = {30, 20, 20, 10, 20};
  if (scene.objects.empty()) return out;
  for (int attempt = 0; attempt < 40 * count && static_cast<int>(out.size()) < count; ++attempt) {
    const std::string& type = types[rng.weighted(weights)];
    QA qa = type == "description" ? description_qa(scene, vocab) : draw_question(type, scene, vocab, rng);
    if (qa.question.empty() || !asked.insert(qa.question).second) continue;
    out.push_back(std::move(qa));
  }
  return out;
}

}  // namespace p2dpo::world
