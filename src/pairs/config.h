#pragma once
// Every choice of pair generation (method.md, "Our defaults" and the paper/released-code
// differences) as one config. A run starts from a preset, overlays the user's file (YAML or JSON;
// unknown keys are errors that name the file and key), and writes the resolved result next to
// its output, so a run records every value it used.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "pairs/filter.h"

namespace p2dpo::pairs {

struct PromptConfig {
  // P: how a question is put to the model; "{question}" is replaced, "<image>" is the image slot.
  // llava-hf's format by default; the world model reads the question before the image.
  std::string template_ = "USER: <image>\n{question} ASSISTANT:";
  std::string image_marker = "<image>";
  // The attention pass's question: "locate" (App. B.3) or "plain" (the released code).
  std::string attention = "locate";
  std::string locate = "Your task is to answer the question by first locating the relevant region in the image. Question: {question}";
  // P_enh's question, asked with two image slots (original first, crop second).
  std::string enhanced =
      "Answer the question mainly based on the first image, refer to the cropping details of the second image if "
      "necessary, answer this question: {question}";
};

struct AttentionConfig {
  // "grad" (ViCrop grad_att at `layers`) | "mean" (head mean at `layers`) | "layer_mean" (head mean,
  // averaged over every layer) | "tok_img" (the paper's A_tok ⊗ A_img: per-layer head-mean maps of
  // the answer position, each normalised over the image, averaged over every layer)
  std::string method = "grad";
  std::vector<int> layers;      // empty: round(14/32 * L), the paper's layer 14 of 32 scaled by depth
  // Prompts per gradient-attention forward (method grad): 1 = one each, as ViCrop; more share one
  // left-padded forward and backward (the same maps up to float rounding; fewer launches on a GPU).
  int batch = 1;
};

// How the generations decode; the records are the same to float rounding either way, so a run may
// resume with other values.
struct DecodingConfig {
  // Freeze each batch's KV cache after its prompt. Unset ("auto"): infer::SamplingConfig's rule,
  // on for CUDA devices, off on the CPU (bench/README.md, GPU run 6).
  std::optional<bool> fixed_cache;
  bool cuda_graphs = false;  // on CUDA, replay each decoding step as one CUDA graph (implies fixed_cache)
  // Decode the batch's answers in two loops instead of four stages: the two-image focus answers in
  // one, every one-image answer (focus rejected, original, robust loser, contrastive winner) in the
  // other (infer::generate_groups), so a host-bound GPU pays each step's launches twice, not four
  // times. Unset ("auto"): on for CUDA devices, off on the CPU, where the stages are compute-bound
  // and their records stay byte-identical to earlier runs.
  std::optional<bool> fuse_stages;
  bool fused_on(bool cuda) const { return fuse_stages.value_or(cuda); }
  // Encode a batch's images in one vision-tower call: every sample's four views together, the
  // batched attention pass's images together, and the batch's CLIPScores in one call, instead of one
  // call per sample (GPU run 6: 0.19-0.45 s a batch each, the GPU 16-62 % busy). Unset ("auto"): on for CUDA devices, off on the CPU, where
  // batching moves the features by float rounding (~1e-5) and the records would change.
  std::optional<bool> encode_together;
  bool encoded_together_on(bool cuda) const { return encode_together.value_or(cuda); }
};

struct CropConfig {
  double base_width = 0, base_height = 0;  // 0: the model's vision input side, in original pixels
  std::vector<double> ratios = {1.0, 1.2, 1.4, 1.6, 1.8, 2.0};
};

struct EraseSettings {
  std::string mode = "mean";  // "mean" | "blur" | "alpha"
  double alpha = 0.5;
  double blur_sigma = 0.0;
  // PIL's ImageDraw.rectangle paints x2/y2 too: the released code erases one more column and row.
  bool pil_inclusive_end = false;
};

struct NoiseSettings {
  std::string mode = "diffusion";  // "diffusion" (VCD, normalized tensor) | "pixel" (Gaussian sigma)
  int diffusion_step = 600;
  double pixel_sigma = 0.2;
};

struct FocusConfig {
  int max_new_tokens = 150;
  // 0 = greedy (the paper and the code); > 0 samples both focus answers (seeded per sample).
  double temperature = 0.0, top_p = 1.0;
  // Also record the model's own answer on the plain view, greedy(I, P), as the released code does
  // (`ori_answer_vicrop`). Training never reads it; it shows whether the enhanced view's winner is
  // any better than what the model already says (stats.json, `p2dpo world pairs-sanity`).
  bool original_answer = true;
};

struct RobustConfig {
  std::string prompt = "{question}";  // the question text for all robustness generations
  double lambda = 0.1;                // contrastive amplification strength (cd_alpha)
  double beta = 0.1;                  // plausibility threshold of V_head (cd_beta)
  double temperature = 0.2, top_p = 0.9;
  int max_new_tokens = 256;
  // The loser, sampled from the noisy image alone.
  std::string loser_prompt = "{question}";
  double loser_temperature = 0.2, loser_top_p = 0.9;
  int loser_max_new_tokens = 256;
};

struct PairsConfig {
  std::string preset = "paper";
  uint64_t seed = 0;
  PromptConfig prompt;
  AttentionConfig attention;
  CropConfig crop;
  EraseSettings erase;
  NoiseSettings noise;
  FocusConfig focus;
  RobustConfig robust;
  FilterConfig filter;  // pairs/filter.h: the filter's and DDW's own settings
  DdwConfig ddw;
  int batch_size = 4;   // samples generated together (batched generation across samples)
  int heatmaps = 8;     // heat-map PNGs for the first K samples
  int max_length = 0;   // reserved: 0 = no prompt truncation
  int reference_batch = 0;  // samples per reference-scoring call (0: the whole generation batch); fewer
                            // bound the memory of the shared prefixes' keys and values (7B: 1-2)
  int min_new_tokens = 0;  // every generation runs at least this many tokens (HF min_new_tokens); benchmarks
                          // set it to the max_new_tokens for fixed lengths
  DecodingConfig decoding;

  nlohmann::json to_json() const;
};

// "paper" or "released-code" (method.md: attention prompt plain in the released code).
PairsConfig preset_config(const std::string& preset);

// preset (from `preset_override` if not empty, else the file's "preset", else "paper") + the
// file's keys. `path` may be empty (defaults only). The file may hold the keys at top level or
// under "pairs:".
PairsConfig load_pairs_config(const std::string& path, const std::string& preset_override = "");

// A YAML or JSON file as JSON (YAML when the name ends in .yaml/.yml). Errors name the file.
nlohmann::json read_config_file(const std::string& path);
// Every key of `user` must exist in `defaults` with a value of the same kind (mapping, list of
// numbers or of texts, number, integer, boolean, text); InputError(path, "unknown key 'a.b'") etc.
// Shared by every config of p2dpo (pairs, train), so all report mistakes alike.
void check_known_keys(const nlohmann::json& user, const nlohmann::json& defaults, const std::string& path,
                      const std::string& prefix);

// Text of a question inside a template: every "{question}" replaced.
std::string fill_question(const std::string& tmpl, const std::string& question);
// The prompt P with its image slot repeated `n` times (I + I_crop in two slots).
std::string with_image_slots(const std::string& prompt, const std::string& marker, int n);

}  // namespace p2dpo::pairs
