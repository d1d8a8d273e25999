#pragma once
// AMBER (Wang et al., arXiv 2311.07397): the official data files and the official inference.py
// metrics (evaluation spec §5), discriminative (existence / attribute / relation: Accuracy,
// Precision, Recall, F1 with "No" as the positive class, counters starting at 0.001, F1 from the
// already-rounded P and R) and generative (CHAIR, Cover, Hal, Cog).
//
// Discriminative scoring is exact. Generative scoring follows inference.py line by line, but the
// official noun extraction needs resources we cannot ship, replaced as follows (expected deviation):
//  * nltk.word_tokenize -> runs of ASCII letters/digits joined by inner hyphens ("air-conditioning",
//    "e-book" stay one token; "dog's" -> "dog"). Same tokens for plain descriptive English.
//  * nltk.pos_tag (averaged perceptron weights, not in Debian) -> every token counts as a noun except:
//    "can" not preceded by a determiner/numeral/container word (the modal verb), "hot" (an adjective in
//    almost every caption), a word ending in "ing" right after a form of "be" (a progressive verb:
//    "is sailing", "are drawing"), and a word right after a subject pronoun or a modal ("they watch",
//    "can watch"). Expected:
//    a few more nouns than nltk on words used as verbs/adjectives (e.g. "light blue" -> "light", a
//    safe word: it only enlarges CHAIR's denominator), so CHAIR may differ by a few tenths.
//  * WordNetLemmatizer -> WordNet's morphy with the noun rules and, when a WordNet 3.0 dictionary
//    directory is given (index.noun, noun.exc; Debian wordnet-base: /usr/share/wordnet), exactly
//    nltk's candidate filter. Without it, candidates are filtered by the AMBER vocabulary (keys and
//    values of relation.json) plus a built-in list of irregular plurals; differs from nltk only where
//    WordNet knows a shorter non-vocabulary lemma (e.g. "sunglasses" -> "sunglass", then dropped).
//  * spaCy en_core_web_lg similarity > 0.8 -> a table of similar word pairs when given (one pair per
//    line, "word1<TAB>word2", both in the vocabulary, symmetric; identical words match only when
//    listed, as spaCy gives 0 for words without vectors), else exact equality. Without the table
//    synonyms are missed: CHAIR and Hal higher, Cover and Cog lower than the official numbers.
// Every results file records which replacements were used.
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/bench_runner.h"  // DecodeOptions

namespace p2dpo::models {
class VisionLanguageModel;
}

namespace p2dpo::eval {

struct AmberAnnotation {
  int64_t id = 0;
  std::string type;                 // "generative", "discriminative-hallucination", ...
  std::string truth_answer;         // discriminative: "yes" | "no"
  std::vector<std::string> truth;   // generative: objects present
  std::vector<std::string> hallu;   // generative: hallucination targets
  bool generative() const { return type == "generative"; }
};

struct AmberQuery {
  int64_t id = 0;
  std::string image;  // "AMBER_1.jpg"
  std::string query;
};

// The official data/ directory: annotations.json, relation.json, safe_words.txt and (for runs)
// query/query_all.json. Annotations are looked up by id (official: annotations[id - 1], the same
// item in the official file, where element i has id i + 1; by id also works on a cut of the file).
struct AmberData {
  std::string dir;
  std::vector<AmberAnnotation> annotations;  // file order
  std::map<int64_t, size_t> index_of_id;
  std::map<std::string, std::vector<std::string>> relation;  // word -> associated words (relation.json)
  std::set<std::string> vocabulary;                          // keys and values of relation.json
  std::vector<std::string> safe_words;                       // safe_words.txt, in order
  const AmberAnnotation& annotation(int64_t id, const std::string& file, size_t row) const;
};

// Reads dir/annotations.json, dir/relation.json, dir/safe_words.txt. InputError names file and field.
AmberData read_amber_data(const std::string& dir);
std::vector<AmberQuery> read_amber_queries(const std::string& path);  // query_*.json

// Response file: a JSON array [{"id": int, "response": str}] (official) or JSONL (p2dpo's answers).
struct AmberResponse {
  int64_t id = 0;
  std::string response;
  std::string file;
  size_t row = 0;  // 1-based element / line
};
std::vector<AmberResponse> read_amber_responses(const std::string& path);

enum class AmberAnswerRule {
  Prefix,  // spec §5.2 decision (P2-DPO's inference.py): strip+lower, "yes..." -> Yes, "no..." -> No, else raw
  Exact,   // official: only the exact strings "Yes" / "No"
  Pope,    // POPE's rule (spec §2.3): No if the words before the first '.' hold "No"/"not"/"no", else Yes
};
AmberAnswerRule parse_amber_answer_rule(const std::string& s, const std::string& flag);
const char* amber_answer_rule_name(AmberAnswerRule r);
// The response as the official comparison sees it: "Yes", "No", or anything else (never equal to either).
std::string amber_normalise_answer(const std::string& response, AmberAnswerRule rule);

// The six counters of one type prefix of inference.py (num fields start at 0.001 as metrics.txt says).
struct AmberQaCounters {
  double correct_num = 0.001, correct_score = 0, no_num = 0.001, no_score = 0, ans_no_num = 0.001, ans_no_score = 0;
  AmberQaCounters& operator+=(const AmberQaCounters& o);
};

// round(x, 1) as Python does it (correctly rounded, ties to even on the exact binary value).
double python_round1(double x);

struct AmberQaMetrics {
  AmberQaCounters counters;
  int64_t items = 0;
  double accuracy = 0, precision = 0, recall = 0, f1 = 0;  // percent, rounded to 0.1 as official
};
// inference.py's formulas; eps is 0.001 for existence and 0.0001 otherwise.
AmberQaMetrics amber_qa_metrics(const AmberQaCounters& c, int64_t items, double eps);

struct AmberDiscriminative {
  AmberQaMetrics overall, existence, attribute, state, number, action, relation;
  std::map<std::string, int64_t> answers;  // normalised answer -> count ("Yes", "No", "other")
};

struct AmberGenerative {
  double chair_score = 0, chair_num = 0.001, safe_cover_score = 0, safe_cover_num = 0.001;
  double hallu_cover_score = 0, hallu_cover_num = 0.001, non_hallu_score = 0, non_hallu_num = 0.001;
  int64_t items = 0, nouns = 0;
  double chair = 0, cover = 0, hal = 0, cog = 0;  // percent, rounded to 0.1 as official
};

// Replacements for nltk/spaCy resources (see the header comment).
struct AmberNlp {
  std::set<std::string> wordnet_nouns;                         // index.noun lemmas (empty: none given)
  std::map<std::string, std::vector<std::string>> wordnet_exc;  // noun.exc
  std::set<std::pair<std::string, std::string>> similar;       // sim > 0.8 pairs, both orders
  bool has_wordnet() const { return !wordnet_nouns.empty(); }
  bool has_similarity() const { return !similar.empty(); }
  bool similar_words(const std::string& a, const std::string& b) const;
};
// dir/index.noun and dir/noun.exc of a WordNet 3.0 dictionary.
void load_wordnet(AmberNlp& nlp, const std::string& dir);
// "word1<TAB>word2" lines ('#' comments, blank lines ignored); words outside the vocabulary throw.
void load_similar_pairs(AmberNlp& nlp, const std::string& path, const std::set<std::string>& vocabulary);

std::vector<std::string> amber_tokenize(const std::string& text);
// nltk's WordNetLemmatizer().lemmatize(word) (pos 'n') with the replacement filter described above.
std::string amber_lemmatize(const std::string& word, const AmberNlp& nlp, const std::set<std::string>& vocabulary);
// extract_nouns(text) filtered to the vocabulary: the nouns inference.py goes on with.
std::vector<std::string> amber_vocabulary_nouns(const std::string& text, const AmberNlp& nlp,
                                                const std::set<std::string>& vocabulary);

// One generative item of inference.py: updates the counters. Returns the hallucinated nouns.
std::vector<std::string> amber_score_generative_item(const std::string& response, const AmberAnnotation& ann,
                                                     const AmberData& data, const AmberNlp& nlp,
                                                     AmberGenerative& acc);

struct AmberScore {
  std::optional<AmberDiscriminative> discriminative;  // when any discriminative item was answered
  std::optional<AmberGenerative> generative;          // when any generative item was answered
  int64_t answered = 0, unanswered_discriminative = 0, unanswered_generative = 0;
  std::vector<std::string> warnings;
};

// Scores responses against the annotations. An id outside the annotations or answered twice throws
// InputError naming the response file and row. `expected_ids` (when not empty) are the ids that
// should have been answered: missing ones are counted and warned about.
AmberScore score_amber(const AmberData& data, const std::vector<AmberResponse>& responses, AmberAnswerRule rule,
                       const AmberNlp& nlp, const std::vector<int64_t>& expected_ids = {});

nlohmann::json amber_results_document(const AmberScore& score, AmberAnswerRule rule, const AmberNlp& nlp,
                                      const nlohmann::json& protocol);
std::string format_amber_table(const AmberScore& score);

enum class AmberMode { Discriminative, Generative, All };
AmberMode parse_amber_mode(const std::string& s, const std::string& flag);
const char* amber_mode_name(AmberMode m);
bool amber_mode_includes(AmberMode m, const AmberAnnotation& a);

// `p2dpo eval amber` with a model: prompt "<image>\n" + query in the conversation template
// (P2-DPO's AMBER_llava.py with conv llava_v1), greedy (P2-DPO samples at T=0.2: spec §5.1
// deviation), max 256 new tokens. Answers: OUT/answers/amber.jsonl (resumable; records {"id",
// "response", "image", "query", "type", "prompt", "model_id"}), OUT/AMBER_responses.json in the
// official inference.py input format (sorted by id), OUT/results.json.
struct AmberRunOptions {
  std::string data_dir;
  std::string queries_path;  // empty = data_dir/query/query_all.json
  std::string images_dir;
  std::string out_dir;
  AmberMode mode = AmberMode::All;
  int64_t limit = 0;  // > 0: the first N selected queries
  int batch_size = 8;
  int max_new_tokens = 256;
  std::string conv_mode = "llava_v1";
  std::string prompt_template;
  std::string model_id;
  nlohmann::json model_settings = nlohmann::json::object();
  AmberAnswerRule answer_rule = AmberAnswerRule::Prefix;
  DecodeOptions decode;  // greedy (official) or VCD; recorded in the run record
  bool progress = true;
};

struct AmberRunResult {
  std::string answers_path;
  AmberScore score;
  nlohmann::json results;
  int64_t generated = 0;
};

// The queries a run asks, in file order (mode and limit applied); with images_dir set, every image is
// checked to exist (InputError naming the image, the query id and --images).
std::vector<AmberQuery> amber_select_queries(const AmberData& data, const std::string& queries_path, AmberMode mode,
                                             int64_t limit, const std::string& images_dir);
AmberRunResult run_amber(models::VisionLanguageModel& model, const AmberRunOptions& opts, const AmberNlp& nlp);

}  // namespace p2dpo::eval
