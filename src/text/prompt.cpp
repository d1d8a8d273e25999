#include "text/prompt.h"

#include <algorithm>
#include <stdexcept>

#include "io/errors.h"

namespace p2dpo::text {

PromptAnswerIds tokenize_prompt_answer(const LlamaTokenizer& tokenizer, const std::string& prompt,
                                       const std::string& answer, const std::string& sep) {
  if (prompt.empty()) throw InputError("--prompt", "the prompt is empty");
  const std::vector<int64_t> full = tokenizer.encode(prompt + sep + answer);
  PromptAnswerIds result;
  result.prompt_ids = tokenizer.encode(prompt);
  const auto mismatch = std::mismatch(result.prompt_ids.begin(), result.prompt_ids.end(), full.begin(), full.end());
  const std::size_t boundary = static_cast<std::size_t>(mismatch.first - result.prompt_ids.begin());
  if (boundary < result.prompt_ids.size()) {
    result.boundary_merged = true;
    result.prompt_ids.resize(boundary);
  }
  result.answer_ids.assign(full.begin() + static_cast<std::ptrdiff_t>(boundary), full.end());
  return result;
}

std::vector<int64_t> expand_image_tokens(const std::vector<int64_t>& ids, int64_t image_token_id,
                                         int tokens_per_image) {
  if (tokens_per_image < 1) {
    throw std::invalid_argument("tokens_per_image must be >= 1, got " + std::to_string(tokens_per_image));
  }
  std::vector<int64_t> out;
  out.reserve(ids.size() + static_cast<std::size_t>(tokens_per_image));
  for (const int64_t id : ids) {
    if (id == image_token_id) {
      out.insert(out.end(), static_cast<std::size_t>(tokens_per_image), id);
    } else {
      out.push_back(id);
    }
  }
  return out;
}

int count_image_markers(const std::string& text, const std::string& marker) {
  if (marker.empty()) return 0;
  int count = 0;
  for (std::size_t pos = text.find(marker); pos != std::string::npos; pos = text.find(marker, pos + marker.size())) {
    ++count;
  }
  return count;
}

}  // namespace p2dpo::text
