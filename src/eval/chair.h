#pragma once
// CHAIR-style object hallucination of generated descriptions against the world's exact ground truth
// (eval/descriptions.jsonl from `p2dpo world make`; the scoring follows Rohrbach et al.'s chair.py,
// evaluation spec §9, with the world's vocabulary in place of COCO's synonym list).
//
// Mention parsing (parse_description), exactly:
//   1. The text is lower-cased (ASCII letters only) and cut into words: maximal runs of ASCII letters
//      (every other byte, digits, hyphens and apostrophes included, separates words).
//   2. Scanning left to right, a class mention is  [size] colour shape  where size is a size word of
//      the vocabulary (optional), colour a colour word and shape a shape word or its plural (shape +
//      "es" after s/x/z/ch/sh, else + "s"); the three (or two) words must be adjacent. A mention
//      consumes its words; scanning resumes after it.
//   3. A shape word (or plural) with no colour word right before it is a shape-only mention ("a
//      circle"): counted separately, never in CHAIR (its class is unknown).
//   Everything else is ignored: colour words alone ("the circle is red"), coordinations ("red and
//   blue circles" gives one mention, "blue circle"), negations ("no red circle" is a mention, as in
//   the official CHAIR), number words (a plural is one mention).
//   Vocabulary entries of several words match as word sequences.
//
// Metrics (counts pooled over captions; each caption's truth = the distinct classes it holds):
//   CHAIR_i  = hallucinated mentions / mentions, mentions counted with repetition (official chair.py)
//   CHAIR_i (distinct) = distinct hallucinated classes / distinct mentioned classes, per caption, pooled
//   CHAIR_s  = captions with >= 1 hallucinated mention / captions
//   Recall   = distinct true classes mentioned / true classes (pooled); Cover = its per-caption mean
//   plus mentions and distinct classes per caption, and the kind of each hallucinated mention:
//   wrong_color (an object of that shape is present, in another colour), wrong_shape (not that, but
//   an object of that colour is present), absent (neither), partner (the class is the co-occurrence
//   partner of a present class; overlaps the others); size errors (a correct class said with a size
//   no present object of the class has); shape-only mentions and those whose shape is absent.
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/bench_runner.h"
#include "models/vlm.h"

namespace p2dpo::eval {

struct ChairVocabulary {
  std::vector<std::string> shapes, colors, sizes;
  std::map<std::string, std::string> partner;  // class -> co-occurrence partner (may be empty)
};

// The vocabulary of a world.json (vocabulary.shapes, vocabulary.colors as names or {"name"},
// vocabulary.sizes as names or an object keyed by name, vocabulary.classes[].partner). InputError
// naming the file and field otherwise.
ChairVocabulary read_world_vocabulary(const std::string& world_json_path);

// The prompt template the world model was trained with: "USER: " + world.json text.human_turn +
// " ASSISTANT:" ("USER: {question}\n<image> ASSISTANT:"); "" when world.json has no text.human_turn.
std::string world_prompt_template(const std::string& world_json_path);

// Plural of a shape word: + "es" after s, x, z, ch, sh; else + "s".
std::string plural_of(const std::string& word);

// Step 1 above.
std::vector<std::string> chair_words(const std::string& text);

struct ObjectMention {
  std::string cls;    // "red circle" (colour + " " + shape, the world's class name)
  std::string color, shape;
  std::string size;   // "" when not said
  bool plural = false;
  size_t word = 0;    // index of its first word in chair_words(text)
};

struct DescriptionParse {
  std::vector<ObjectMention> mentions;  // in text order, with repetition
  std::vector<std::string> shape_only;  // shape names (singular) mentioned without a colour
};

DescriptionParse parse_description(const std::string& text, const ChairVocabulary& vocab);

struct ChairObject {
  std::string cls, size;  // size "" when the record has no object_details
};

// One record of eval/descriptions.jsonl.
struct ChairItem {
  int64_t question_id = 0;
  std::string image;     // relative to the images directory (images/eval/)
  std::string question;  // "text"
  std::vector<ChairObject> objects;  // from object_details when present, else from objects (no size)
};

// Reads descriptions.jsonl; missing or mistyped fields and duplicate question ids throw InputError
// naming the file and line.
std::vector<ChairItem> read_chair_items(const std::string& path);

struct ChairAnswer {
  int64_t question_id = 0;
  std::string text;
  size_t line = 0;
};

// An answers JSONL ({"question_id", "text", ...} per line, as `eval chair` writes them).
std::vector<ChairAnswer> read_chair_answers(const std::string& path);

struct ChairCaption {
  int64_t question_id = 0;
  std::string image, text;
  DescriptionParse parse;
  std::vector<bool> hallucinated;  // per mention
  std::set<std::string> truth, mentioned, hallucinated_classes, covered;
  int64_t wrong_color = 0, wrong_shape = 0, absent = 0, partner = 0;  // hallucinated mentions by kind
  int64_t size_mentions = 0, size_errors = 0;        // non-hallucinated mentions that say a size
  int64_t shape_only_hallucinated = 0;
};

// Scores one caption against its record.
ChairCaption score_caption(const ChairItem& item, const std::string& text, const ChairVocabulary& vocab);

struct ChairScore {
  int64_t captions = 0, unanswered = 0;
  int64_t mentions = 0, hallucinated_mentions = 0;
  int64_t distinct_mentions = 0, distinct_hallucinated = 0;
  int64_t hallucinated_captions = 0;
  int64_t true_objects = 0, covered_objects = 0;
  int64_t wrong_color = 0, wrong_shape = 0, absent = 0, partner = 0;
  int64_t size_mentions = 0, size_errors = 0, shape_only_mentions = 0, shape_only_hallucinated = 0;
  double chair_i = 0, chair_i_distinct = 0, chair_s = 0, recall = 0, cover = 0;  // fractions; NaN on 0/0
  double mentions_per_caption = 0, distinct_per_caption = 0;
  std::vector<ChairCaption> per_caption;  // in item order
};

// Pairs answers with items by question_id. An answer whose id is no item, or an item answered twice,
// throws InputError naming the answers file; items without an answer are left out (counted in
// `unanswered`, with a warning).
ChairScore score_chair(const std::vector<ChairItem>& items, const std::vector<ChairAnswer>& answers,
                       const ChairVocabulary& vocab, const std::string& answers_file,
                       std::vector<std::string>& warnings);

nlohmann::json chair_caption_json(const ChairCaption& c);
// {"benchmark": "chair", "metrics": {...}, "counts": {...}, "n", "protocol", "warnings", "definitions"}.
nlohmann::json chair_results_document(const ChairScore& score, const nlohmann::json& protocol,
                                      const std::vector<std::string>& warnings);
std::string format_chair_table(const ChairScore& score);

// Writes one chair_caption_json per line, atomically.
void write_chair_captions(const std::string& path, const ChairScore& score);

struct ChairRunOptions {
  std::string descriptions_path;  // eval/descriptions.jsonl
  std::string images_dir;         // images/eval/
  std::string out_dir;            // answers/chair.jsonl, results.json, chair_captions.jsonl
  ChairVocabulary vocab;
  std::string vocab_source;       // recorded (the world.json path)
  int64_t limit = 0;              // > 0: the first N records
  int batch_size = 8;
  int max_new_tokens = 128;
  std::string prompt_template = "USER: {question}\n<image> ASSISTANT:";
  std::string model_id;
  nlohmann::json model_settings = nlohmann::json::object();
  DecodeOptions decode;  // greedy, or VCD as a training-free baseline (`--decode vcd`)
  bool progress = true;
};

struct ChairRunResult {
  std::string answers_path;
  ChairScore score;
  std::vector<std::string> warnings;
  nlohmann::json results;  // what OUT/results.json holds (written)
  int64_t generated = 0;
};

// The records a run asks (limit applied); with images_dir set, every image is checked to exist.
std::vector<ChairItem> chair_select_items(const std::string& descriptions_path, int64_t limit,
                                          const std::string& images_dir);

// Greedy descriptions through run_generation (resumable), then scores them and writes results.json
// and chair_captions.jsonl under out_dir.
ChairRunResult run_chair(models::VisionLanguageModel& model, const ChairRunOptions& opts);

}  // namespace p2dpo::eval
