#include "pairs/responses.h"

#include <torch/types.h>
#include <torch/utils.h>

#include "infer/scoring.h"

namespace p2dpo::pairs {

ResponseTokens response_tokens(const models::VisionLanguageModel& model, const std::string& prompt,
                               const std::string& response, const std::vector<models::PreparedImage>& images) {
  ResponseTokens t;
  if (response.empty()) {
    // An empty answer is just EOS: the prompt alone is tokenized.
    t.prompt_ids = model.tokenize_prompt(prompt, images);
  } else {
    auto [p, a] = model.tokenize_prompt_answer(prompt, response, images);
    t.prompt_ids = std::move(p);
    t.answer_ids = std::move(a);
  }
  const auto& eos = model.info().eos_token_ids;
  if (!eos.empty()) t.answer_ids.push_back(eos.front());
  return t;
}

double response_logprob_sum(models::VisionLanguageModel& model, const std::vector<models::PreparedImage>& images,
                            const std::string& prompt, const std::string& response) {
  torch::NoGradGuard no_grad;
  const ResponseTokens t = response_tokens(model, prompt, response, images);
  return infer::score_ids(model, images, t.prompt_ids, t.answer_ids).sum;
}

}  // namespace p2dpo::pairs
