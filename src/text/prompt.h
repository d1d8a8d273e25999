#pragma once
// Prompt/answer tokenization for answer log-probs (hf-port §E.4) and <image> expansion.
//
// Convention for "the answer's tokens":
//   full_ids   = tok.encode(prompt + sep + answer)      (sep defaults to " ")
//   prompt_ids = tok.encode(prompt)
//   If full_ids starts with prompt_ids: answer_ids = full_ids[len(prompt_ids):].
//   Otherwise a token merged across the boundary. Following TRL's DPO rule (generalised from "the
//   last prompt token changed" to "the first differing token"), the answer starts at the first index
//   k where full_ids and prompt_ids differ, prompt_ids is cut to full_ids[:k], and boundary_merged
//   is set so callers can report it. Either way prompt_ids + answer_ids == full_ids.
// The answer is never tokenized on its own: that would add BOS and a second dummy "▁" (§E.4.3).
//
// Image tokens: the tokenizer maps each "<image>" string to ONE id. The llava-hf processor repeats
// the "<image>" string tokens_per_image times before tokenizing; expand_image_tokens does the same
// on ids (each image id becomes tokens_per_image copies), which gives identical ids because
// adjacent added tokens have no text between them. The function is not idempotent: expanding an
// already expanded sequence multiplies again.
#include <cstdint>
#include <string>
#include <vector>

#include "text/llama_tokenizer.h"

namespace p2dpo::text {

struct PromptAnswerIds {
  std::vector<int64_t> prompt_ids;  // with BOS (per the tokenizer config)
  std::vector<int64_t> answer_ids;
  bool boundary_merged = false;  // true when the TRL fallback above was needed
};

// InputError("--prompt", ...) for an empty prompt.
PromptAnswerIds tokenize_prompt_answer(const LlamaTokenizer& tokenizer, const std::string& prompt,
                                       const std::string& answer, const std::string& sep = " ");

// Each occurrence of image_token_id becomes tokens_per_image copies (tokens_per_image >= 1, else
// std::invalid_argument).
std::vector<int64_t> expand_image_tokens(const std::vector<int64_t>& ids, int64_t image_token_id,
                                         int tokens_per_image);

// Non-overlapping occurrences of `marker` in text.
int count_image_markers(const std::string& text, const std::string& marker = "<image>");

}  // namespace p2dpo::text
