#pragma once
// A client for an OpenAI-compatible chat-completions endpoint, used as the judge of MMHal-Bench
// (evaluation spec §6.4): POST {url}/chat/completions with one user message, temperature 0, and
// bounded retries with exponential back-off on 429, 5xx and network errors (the official script
// retries forever). Other 4xx answers (bad key, unknown model) are not retried.
#include <cstdint>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace p2dpo::eval {

struct JudgeConfig {
  std::string url = "https://api.openai.com/v1";  // base URL; ".../chat/completions" is also accepted
  std::string model = "gpt-4-0314";                // the official judge model
  std::string api_key;        // "" = no Authorization header (local servers)
  double timeout_s = 120.0;   // whole request, connection included
  int max_retries = 5;        // retries after the first attempt
  double backoff_s = 2.0;     // first wait; doubled after each failed attempt, capped at backoff_max_s
  double backoff_max_s = 60.0;
  double temperature = 0.0;
  int max_tokens = 0;         // 0 = not sent (the official judge sends none)
  double interval_s = 0.0;    // pause between successful calls (the official script sleeps 1 s)
  // PEM file of CA certificates that verify an https:// judge ("" = the system store). For a
  // self-hosted endpoint behind a private CA; verification itself is never turned off.
  std::string ca_bundle;
  std::string api_key_source = "none";  // where the key came from (recorded; the key never is)
};

// Fills `cfg` from the environment, the first set name of each list winning: P2DPO_JUDGE_URL or
// JUDGE_BASE_URL; P2DPO_JUDGE_MODEL or JUDGE_MODEL; P2DPO_JUDGE_API_KEY, JUDGE_API_KEY or
// OPENAI_API_KEY; P2DPO_JUDGE_TIMEOUT_S or JUDGE_TIMEOUT_S; P2DPO_JUDGE_MAX_RETRIES or
// JUDGE_MAX_RETRIES (the JUDGE_* names are the evaluation spec's, §6.4). Unset or empty variables
// leave the field. A malformed number throws InputError naming the variable.
void apply_judge_environment(JudgeConfig& cfg);
// Fills `cfg` from a JSON config file {"url", "model", "api_key", "timeout_s", "max_retries",
// "backoff_s", "max_tokens", "interval_s", "ca_bundle"} (every key optional; unknown keys are refused).
void apply_judge_config_file(JudgeConfig& cfg, const std::string& path);
// InputError(flag) for an empty URL or model, a non-positive timeout, negative retries.
void check_judge_config(const JudgeConfig& cfg);
// {url}/chat/completions unless the URL already ends with /chat/completions.
std::string judge_endpoint(const JudgeConfig& cfg);
// What results record: url, model, temperature, max_tokens, retries, api key source (not the key).
nlohmann::json judge_config_json(const JudgeConfig& cfg);

// A judge call that failed for good. `retryable` tells a transient failure (network, timeout, 429,
// 5xx: the retries ran out) from a refusal (other 4xx, which no retry fixes). The message names the
// endpoint and the HTTP status (0 for a network error) and quotes the start of the reply body.
class JudgeError : public std::runtime_error {
 public:
  JudgeError(const std::string& message, long status, bool retryable)
      : std::runtime_error(message), status_(status), retryable_(retryable) {}
  long status() const { return status_; }
  bool retryable() const { return retryable_; }

 private:
  long status_;
  bool retryable_;
};

struct JudgeReply {
  std::string content;    // choices[0].message.content
  nlohmann::json raw;     // the whole response object
  int attempts = 0;       // HTTP attempts made (1 = first try)
};

class JudgeClient {
 public:
  explicit JudgeClient(JudgeConfig cfg);  // checks the config (InputError)
  // One user message; throws JudgeError when every attempt failed or a non-retryable status came.
  JudgeReply complete(const std::string& prompt);
  const JudgeConfig& config() const { return cfg_; }
  // The request body complete() sends (exposed for tests and for the record).
  nlohmann::json request_body(const std::string& prompt) const;

 private:
  JudgeConfig cfg_;
  bool called_before_ = false;
};

// SHA-256 of a byte string, lowercase hex (a small self-contained FIPS 180-4 implementation).
std::string sha256_hex(const std::string& bytes);

}  // namespace p2dpo::eval
