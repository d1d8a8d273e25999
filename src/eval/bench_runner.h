#pragma once
// A resumable generation loop shared by the benchmark runners (HallusionBench, AMBER, MMHal): one
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

#include "infer/generate.h"
#include "models/vlm.h"

namespace p2dpo::eval {

// How the generative evaluators decode (`--decode`). Greedy is the official protocol (spec §1.3).
// VCD (Leng et al., DAMO-NLP-SG/VCD, vcd_sample.py) is the training-free baseline: every step the
// model runs on the clean image (expert) and on VCD's diffusion-noised image tensor (amateur), and
// the next token is picked from (1 + cd_alpha) * l(I) - cd_alpha * l(I_noise), restricted to the
// expert's plausible set {v : p(v | I) >= cd_beta * max p(. | I)} (pairs::contrastive_amplification).
// VCD samples from these scores (temperature 1); p2dpo takes their argmax, so a VCD run is
// deterministic and differs from greedy only by the contrast. A prompt without an image has nothing
// to contrast: its amateur is the expert's own context, which reduces to greedy.
struct DecodeOptions {
  enum class Mode { Greedy, Vcd };
  Mode mode = Mode::Greedy;
  double cd_alpha = 1.0;  // VCD's --cd_alpha (its LLaVA-1.5 default)
  double cd_beta = 0.1;   // VCD's --cd_beta, in [0, 1]
  int noise_step = 500;   // VCD's --noise_step: diffusion step in [0, 999] of the amateur's noise
  uint64_t seed = 0;      // the amateur noise of an image depends on (seed, image name) only
  bool vcd() const { return mode == Mode::Vcd; }
};

DecodeOptions::Mode parse_decode_mode(const std::string& s, const std::string& flag);  // greedy | vcd
const char* decode_mode_name(DecodeOptions::Mode m);
// InputError naming the flag (--cd-alpha, --cd-beta, --vcd-noise-step) for a value out of range.
void check_decode_options(const DecodeOptions& d);
// What run records keep under "decoding": "greedy" (as before VCD existed), or for VCD an object
// with every setting, so resuming an answers file under another decoding is refused.
nlohmann::json decode_protocol(const DecodeOptions& d);

// The VCD amateur view of an image: add_diffusion_noise(clean.pixel_values, noise_step, seed) with
// seed = pairs::view_seed(d.seed, image_key, "vcd"), i.e. a pure function of the image's name.
models::PreparedImage vcd_noisy_view(const models::PreparedImage& clean, const DecodeOptions& d,
                                     const std::string& image_key);

// Decodes a batch under `d`: greedy = infer::generate(expert); VCD = expert and amateur[i] stepped
// together by infer::generate_multi_context with the contrastive combiner, argmax of the scores.
// `amateur` is ignored for greedy and must match `expert` in size for VCD.
std::vector<infer::GenerationResult> generate_decoded(models::VisionLanguageModel& model,
                                                      const std::vector<infer::GenerationRequest>& expert,
                                                      const std::vector<infer::GenerationRequest>& amateur,
                                                      const DecodeOptions& d, int max_new_tokens);

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
  std::string image_key = {};  // names the image for VCD's noise seed; "" = image_path's file name
};

struct GenerationRunOptions {
  std::string answers_path;  // JSONL, appended
  nlohmann::json protocol;   // recorded in <answers_path>.run.json and checked on resume; its
                             // "decoding" key is set from `decode` (decode_protocol)
  DecodeOptions decode;      // greedy (official) or VCD
  int batch_size = 8;
  int max_new_tokens = 128;
  std::string progress_label;  // e.g. "hallusionbench"
  bool progress = true;        // progress lines on stderr (done/total, rate, ETA)
};

// The protocol a generative benchmark records beside its answers (and repeats in its results):
// which model, how prompted, how decoded, how long. `RunOptions` is any benchmark's run options
// with model_id, model_settings, decode and max_new_tokens; benchmarks add their own keys after.
template <class RunOptions>
nlohmann::json bench_protocol(const std::string& benchmark, const RunOptions& o, const std::string& prompt_template) {
  return {{"benchmark", benchmark},
          {"model_id", o.model_id},
          {"model_settings", o.model_settings},
          {"prompt_template", prompt_template},
          {"decoding", decode_protocol(o.decode)},
          {"max_new_tokens", o.max_new_tokens}};
}

// run_generation's options from a benchmark's run options (decode, batch_size, max_new_tokens,
// progress) and its answers file, protocol and progress label.
template <class RunOptions>
GenerationRunOptions bench_generation_options(const RunOptions& o, const std::string& answers_path,
                                              const nlohmann::json& protocol, const std::string& label) {
  GenerationRunOptions gen;
  gen.answers_path = answers_path;
  gen.protocol = protocol;
  gen.decode = o.decode;
  gen.batch_size = o.batch_size;
  gen.max_new_tokens = o.max_new_tokens;
  gen.progress_label = label;
  gen.progress = o.progress;
  return gen;
}

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
