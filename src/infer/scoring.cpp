#include "infer/scoring.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>

#include "io/errors.h"

namespace p2dpo::infer {

torch::Tensor token_logprobs(const torch::Tensor& logits, const torch::Tensor& targets) {
  auto lp = torch::log_softmax(logits.to(torch::kFloat32), -1);
  return lp.gather(-1, targets.unsqueeze(-1).to(lp.device())).squeeze(-1);
}

ScoreResult score_ids(models::VisionLanguageModel& model, const std::vector<models::PreparedImage>& images,
                      const std::vector<int64_t>& prompt_ids, const std::vector<int64_t>& answer_ids) {
  if (prompt_ids.empty()) throw InputError("--prompt", "the prompt has no tokens");
  if (answer_ids.empty()) throw InputError("--answer", "the answer has no tokens");
  torch::NoGradGuard no_grad;
  std::vector<int64_t> full = prompt_ids;
  full.insert(full.end(), answer_ids.begin(), answer_ids.end());
  const int64_t P = static_cast<int64_t>(prompt_ids.size());
  const int64_t A = static_cast<int64_t>(answer_ids.size());
  auto ids = torch::tensor(full, torch::kLong).view({1, -1});
  models::ForwardInput in;
  in.input_ids = ids;
  in.image_features = model.encode_images(images);
  auto out = model.forward(in);
  // Row t-1 predicts token t: the answer occupies [P, P+A).
  auto logits = out.logits.slice(1, P - 1, P + A - 1);
  auto targets = ids.slice(1, P, P + A);
  auto lp = token_logprobs(logits, targets).squeeze(0).cpu().contiguous();

  ScoreResult r;
  r.prompt_ids = prompt_ids;
  r.answer_ids = answer_ids;
  r.logprobs.assign(lp.data_ptr<float>(), lp.data_ptr<float>() + A);
  double s = 0;
  for (float v : r.logprobs) s += v;
  r.sum = s;
  r.mean = s / static_cast<double>(A);
  r.ppl = std::exp(-r.mean);
  return r;
}

ScoreResult score_text(models::VisionLanguageModel& model, const std::vector<models::PreparedImage>& images,
                       const std::string& prompt, const std::string& answer) {
  if (answer.empty()) throw InputError("--answer", "the answer is empty");
  auto [p, a] = model.tokenize_prompt_answer(prompt, answer, images);
  return score_ids(model, images, p, a);
}

}  // namespace p2dpo::infer
