#pragma once
// How a response is scored wherever P2-DPO needs a sequence log-prob: the reference log-probs
// recorded with the pairs and the policy log-probs of the trainer must use the same tokens, so
// both go through this one function: answer tokens under the prompt convention of text/prompt.h,
// followed by the end-of-sequence token (the response ends there, as in TRL's DPO and LLaVA's
// conversation template).
#include <string>
#include <vector>

#include "models/vlm.h"

namespace p2dpo::pairs {

struct ResponseTokens {
  std::vector<int64_t> prompt_ids;  // image tokens expanded
  std::vector<int64_t> answer_ids;  // the response's tokens + EOS
};

ResponseTokens response_tokens(const models::VisionLanguageModel& model, const std::string& prompt,
                               const std::string& response, const std::vector<models::PreparedImage>& images);

// Σ log p(answer_ids | prompt, images) (fp32 logits, no gradient).
double response_logprob_sum(models::VisionLanguageModel& model, const std::vector<models::PreparedImage>& images,
                            const std::string& prompt, const std::string& response);

}  // namespace p2dpo::pairs
