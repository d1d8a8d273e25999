#pragma once
// The world's language: descriptions, captions, and questions with answers that carry a short
// justification, all computed from a scene's ground truth.
#include <array>
#include <string>
#include <vector>

#include "world/options.h"
#include "world/random.h"
#include "world/scene.h"

namespace p2dpo::world {

// A question with its true answer. `objects` lists the scene objects the answer is about (by index),
// `asked_class` the class named in an existence / where question (-1 otherwise), `region` the 3x3
// cell of a region question (-1 otherwise).
struct QA {
  // description, existence, existence_short, color, shape, size, where, count, region, relation, relation_yesno
  std::string type;
  std::string question, answer;
  std::vector<int> objects;
  int asked_class = -1;
  int region = -1;
};

enum class Direction { LeftOf, RightOf, Above, Below };
const char* direction_phrase(Direction d);  // "to the left of", "to the right of", "above", "below"
// Whether objects[a] stands in direction d to objects[b] according to scene.relations.
bool holds(const Scene& scene, int a, Direction d, int b);

std::string number_word(int n);                                // "one".."twelve", digits beyond
std::string with_article(const std::string& noun_phrase);      // "a red circle", "an orange star"
std::string join_list(const std::vector<std::string>& items);  // "a", "a and b", "a, b and c"
std::string full_name(const Vocabulary& vocab, const Object& o);  // "small red circle"

// "There are three objects: a large red circle at the top left, a small blue star on the right and
// a small green square at the bottom."; objects in reading order.
std::string describe_scene(const Scene& scene, const Vocabulary& vocab);
// CLIP caption: "a large red circle, a small blue star and a small green square".
std::string caption_scene(const Scene& scene, const Vocabulary& vocab);

// The canonical existence question (the POPE template): "Is there a red circle in the image?".
std::string existence_question(const Vocabulary& vocab, int cls);
inline constexpr const char* kDescribeQuestion = "Describe the image.";
// LLaVA-1.5's short-answer instruction (its POPE prompt appends it on a new line).
inline constexpr const char* kShortAnswerSuffix = "Answer the question using a single word or phrase.";

QA description_qa(const Scene& scene, const Vocabulary& vocab, const std::string& question = kDescribeQuestion);
// "Yes, there is a small red circle at the top left." / "No, I see a blue star and a green square,
// but no red circle."
QA existence_qa(const Scene& scene, const Vocabulary& vocab, int cls, const std::string& question_template = "");
// The official POPE prompt form: "Is there a red circle in the image?\nAnswer the question using a
// single word or phrase." -> "Yes" / "No".
QA existence_short_qa(const Scene& scene, const Vocabulary& vocab, int cls);
QA where_qa(const Scene& scene, const Vocabulary& vocab, int cls);
QA count_qa(const Scene& scene);
QA region_qa(const Scene& scene, const Vocabulary& vocab, int region);
QA size_qa(const Scene& scene, const Vocabulary& vocab, int object);
// These return an empty question when the object cannot be named unambiguously / no fact exists.
QA color_qa(const Scene& scene, const Vocabulary& vocab, int object);
QA shape_qa(const Scene& scene, const Vocabulary& vocab, int object);
QA relation_qa(const Scene& scene, const Vocabulary& vocab, int object, Direction d);
QA relation_yesno_qa(const Scene& scene, const Vocabulary& vocab, int a, int b, Direction d);

// The question conversations of one training scene (the description comes separately), distinct
// questions, existence about half of them (balanced yes/no; negatives from partners, popular and
// random classes in equal parts).
std::vector<QA> training_questions(const Scene& scene, const Vocabulary& vocab, int count, Rng& rng);
// Open-ended prompts for pair generation (describe, region, colour, where, relation).
std::vector<QA> open_prompts(const Scene& scene, const Vocabulary& vocab, int count, Rng& rng);

// An absent class for an existence negative: the partner of a present object, a popular class or a
// uniformly random class (each a third of the time when available).
int sample_negative_class(const Scene& scene, const Vocabulary& vocab, Rng& rng);

}  // namespace p2dpo::world
