#pragma once
// A resumable greedy-generation loop shared by the benchmark runners (HallusionBench, AMBER): one
// prompt per item, with or without an image, answers appended to a JSONL file and flushed per item.
//
// Resume contract (the same as the POPE runner's): items are cut into fixed batches of the full
// list; a batch whose items are all answered is skipped, a batch with any answer missing is rerun
// whole and only its missing answers are written, so a resumed run writes the same bytes as an
// uninterrupted one. Beside the answers file, <answers>.run.json records the protocol; resuming
// under a different protocol is refused (InputError naming the record and the differing key).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/vlm.h"

namespace p2dpo::eval {

// Conversation templates with one "{question}" and one "<image>" (evaluation spec §1.1, §4.2):
//   llava_v1 (P2-DPO's scripts and the HallusionBench/AMBER default), vicuna_v1 (LLaVA's scripts),
//   hf ("USER: <image>\n{question} ASSISTANT:"), vlmevalkit (VLMEvalKit's LLaVA wrapper: the llava_v1
//   system, "USER:  <image> {question} ASSISTANT: "). Unknown mode -> InputError("--conv-mode").
std::string bench_conv_template(const std::string& conv_mode);

// The prompt for one question. With an image: the template with {question} filled. Without one
// (HallusionBench rows with visual_input "0" are asked without an image, spec §4.2): the same with
// the image marker removed, together with one newline or space right after it ("<image>\n{q}" ->
// "{q}"), as LLaVA builds a text-only turn.
std::string bench_prompt(const std::string& prompt_template, const std::string& question, bool with_image);

// InputError(flag) unless the template holds exactly one "{question}" and one "<image>".
void check_bench_template(const std::string& prompt_template, const std::string& flag);

// Every resumable answers file has <answers>.run.json beside it holding {"protocol": ...} (plus
// `extra` fields). An existing record must agree with `protocol` key by key, else InputError naming
// the record and the key (resuming under another protocol would mix two experiments in one file);
// answers without a record are refused; otherwise the record is written. Used by POPE too.
void check_or_write_run_record(const std::string& answers_path, const nlohmann::json& protocol,
                               const nlohmann::json& extra = nlohmann::json::object());

struct GenerationItem {
  std::string id;          // unique within the run; the resume key
  std::string image_path;  // "" = text only
  std::string prompt;      // full prompt; holds one "<image>" iff image_path is set
};

struct GenerationRunOptions {
  std::string answers_path;  // JSONL, appended
  nlohmann::json protocol;   // recorded in <answers_path>.run.json and checked on resume
  int batch_size = 8;
  int max_new_tokens = 128;
  std::string progress_label;  // e.g. "hallusionbench"
  bool progress = true;        // progress lines on stderr (done/total, rate, ETA)
};

// Builds the JSONL record of item `index` from its decoded, stripped answer.
using RecordMaker = std::function<nlohmann::json(size_t index, const std::string& answer)>;
// Reads the resume key back from a record of the answers file (InputError on a malformed record).
using RecordKey = std::function<std::string(const nlohmann::json& record, size_t line)>;

// Answers every item not yet in the answers file; returns how many were generated now. Records in
// the file whose key is not an item are refused unless `known_ids` holds them (a longer earlier
// run with a smaller --limit now), so a file from another benchmark is never mixed in.
int64_t run_generation(models::VisionLanguageModel& model, const std::vector<GenerationItem>& items,
                       const GenerationRunOptions& opts, const RecordMaker& make_record, const RecordKey& key_of,
                       const std::vector<std::string>& known_ids = {});

// The model directory's last path component ("/x/llava-1.5-7b-hf/" -> "llava-1.5-7b-hf").
std::string model_id_from_dir(const std::string& dir);

}  // namespace p2dpo::eval
