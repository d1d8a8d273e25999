#include "eval/judge_client.h"

#ifdef P2DPO_HAVE_CURL
#include <curl/curl.h>
#endif
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "io/errors.h"
#include "io/json_io.h"

namespace p2dpo::eval {

namespace {

double parse_env_number(const char* name, const char* value) {
  char* end = nullptr;
  const double v = std::strtod(value, &end);
  if (end == value || *end != '\0' || !std::isfinite(v)) {
    throw InputError(name, fmt::format("'{}' is not a number", value));
  }
  return v;
}

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? v : nullptr;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The first `n` bytes of a reply body on one line, for error messages.
std::string excerpt(const std::string& body, size_t n = 300) {
  std::string s = body.substr(0, n);
  std::replace(s.begin(), s.end(), '\n', ' ');
  std::replace(s.begin(), s.end(), '\r', ' ');
  return body.size() > n ? s + "..." : s;
}

struct HttpResult {
  long status = 0;          // 0: no HTTP answer (network error)
  std::string body;
  std::string network_error;
};

#ifdef P2DPO_HAVE_CURL
size_t collect_body(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) throw std::runtime_error("curl_global_init failed");
  });
}

HttpResult post_json(const std::string& url, const std::string& body, const std::string& api_key, double timeout_s,
                     const std::string& ca_bundle) {
  global_init();
  HttpResult r;
  CURL* curl = curl_easy_init();
  if (curl == nullptr) throw std::runtime_error("curl_easy_init failed");
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  if (!api_key.empty()) headers = curl_slist_append(headers, ("Authorization: Bearer " + api_key).c_str());
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_POST, 1L);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(std::ceil(timeout_s * 1000.0)));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);  // no SIGALRM for timeouts: safe beside threads
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "p2dpo-judge/1");
  if (!ca_bundle.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, ca_bundle.c_str());
  const CURLcode rc = curl_easy_perform(curl);
  if (rc == CURLE_OK) {
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
  } else {
    r.network_error = errbuf[0] != '\0' ? std::string(errbuf) : std::string(curl_easy_strerror(rc));
  }
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return r;
}
#else
HttpResult post_json(const std::string& url, const std::string&, const std::string&, double, const std::string&) {
  throw std::runtime_error("this p2dpo was built without libcurl (Debian: libcurl4-openssl-dev); cannot call the judge at " + url);
}
#endif

// 429 (rate limit) and 5xx are worth another try; other 4xx (bad key, unknown model, bad request)
// would fail the same way again.
bool retryable_status(long status) { return status == 429 || status >= 500; }

}  // namespace

void apply_judge_environment(JudgeConfig& cfg) {
  // The first set variable of each list wins: p2dpo's own name, then the evaluation spec's (§6.4),
  // then (for the key) the OpenAI SDK's.
  auto first = [](std::initializer_list<const char*> names, std::string* used = nullptr) -> const char* {
    for (const char* n : names) {
      if (const char* v = env(n)) {
        if (used != nullptr) *used = n;
        return v;
      }
    }
    return nullptr;
  };
  if (const char* v = first({"P2DPO_JUDGE_URL", "JUDGE_BASE_URL"})) cfg.url = v;
  if (const char* v = first({"P2DPO_JUDGE_MODEL", "JUDGE_MODEL"})) cfg.model = v;
  std::string used;
  if (const char* v = first({"P2DPO_JUDGE_API_KEY", "JUDGE_API_KEY", "OPENAI_API_KEY"}, &used)) {
    cfg.api_key = v;
    cfg.api_key_source = "env " + used;
  }
  if (const char* v = first({"P2DPO_JUDGE_TIMEOUT_S", "JUDGE_TIMEOUT_S"}, &used)) {
    cfg.timeout_s = parse_env_number(used.c_str(), v);
  }
  if (const char* v = first({"P2DPO_JUDGE_CA_BUNDLE", "JUDGE_CA_BUNDLE"})) cfg.ca_bundle = v;
  if (const char* v = first({"P2DPO_JUDGE_MAX_RETRIES", "JUDGE_MAX_RETRIES"}, &used)) {
    const double n = parse_env_number(used.c_str(), v);
    if (n != std::floor(n) || n < 0 || n > 1000) throw InputError(used, fmt::format("'{}' is not a count", v));
    cfg.max_retries = static_cast<int>(n);
  }
}

void apply_judge_config_file(JudgeConfig& cfg, const std::string& path) {
  const nlohmann::json j = io::read_json_file(path);
  if (!j.is_object()) throw InputError(path, "the judge config must be a JSON object");
  static const std::set<std::string> known = {"url",       "model",      "api_key",    "timeout_s",  "max_retries",
                                              "backoff_s", "max_tokens", "interval_s", "temperature", "ca_bundle"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!known.count(it.key())) {
      throw InputError(path, "unknown key '" + it.key() +
                                 "' (url, model, api_key, timeout_s, max_retries, backoff_s, max_tokens, interval_s, "
                                 "temperature, ca_bundle)");
    }
  }
  cfg.url = io::get_optional<std::string>(j, "url", cfg.url, path, "");
  cfg.model = io::get_optional<std::string>(j, "model", cfg.model, path, "");
  if (j.contains("api_key") && !j["api_key"].is_null()) {
    cfg.api_key = io::get_required<std::string>(j, "api_key", path, "");
    cfg.api_key_source = "config file";
  }
  cfg.timeout_s = io::get_optional<double>(j, "timeout_s", cfg.timeout_s, path, "");
  cfg.max_retries = io::get_optional<int>(j, "max_retries", cfg.max_retries, path, "");
  cfg.backoff_s = io::get_optional<double>(j, "backoff_s", cfg.backoff_s, path, "");
  cfg.max_tokens = io::get_optional<int>(j, "max_tokens", cfg.max_tokens, path, "");
  cfg.interval_s = io::get_optional<double>(j, "interval_s", cfg.interval_s, path, "");
  cfg.temperature = io::get_optional<double>(j, "temperature", cfg.temperature, path, "");
  cfg.ca_bundle = io::get_optional<std::string>(j, "ca_bundle", cfg.ca_bundle, path, "");
}

void check_judge_config(const JudgeConfig& cfg) {
  if (cfg.url.empty()) throw InputError("--judge-url", "is empty");
  if (cfg.url.rfind("http://", 0) != 0 && cfg.url.rfind("https://", 0) != 0)
    throw InputError("--judge-url", "'" + cfg.url + "' is not an http:// or https:// URL");
  if (cfg.model.empty()) throw InputError("--judge-model", "is empty");
  if (!(cfg.timeout_s > 0) || !std::isfinite(cfg.timeout_s))
    throw InputError("--judge-timeout", fmt::format("{} is not a positive number of seconds", cfg.timeout_s));
  if (cfg.max_retries < 0) throw InputError("--judge-max-retries", "must be >= 0");
  if (!(cfg.backoff_s >= 0) || !(cfg.backoff_max_s >= 0)) throw InputError("--judge-backoff", "must be >= 0");
  if (cfg.max_tokens < 0) throw InputError("--judge-max-tokens", "must be >= 0");
  if (!(cfg.interval_s >= 0)) throw InputError("--judge-interval", "must be >= 0");
  if (!cfg.ca_bundle.empty() && !std::filesystem::is_regular_file(cfg.ca_bundle))
    throw InputError("--judge-ca-bundle", "'" + cfg.ca_bundle + "' is not a file (PEM CA certificates)");
}

std::string judge_endpoint(const JudgeConfig& cfg) {
  std::string base = cfg.url;
  if (ends_with(base, "/chat/completions")) return base;
  while (!base.empty() && base.back() == '/') base.pop_back();
  return base + "/chat/completions";
}

nlohmann::json judge_config_json(const JudgeConfig& cfg) {
  nlohmann::json j = {{"endpoint", judge_endpoint(cfg)},
                      {"model", cfg.model},
                      {"temperature", cfg.temperature},
                      {"max_retries", cfg.max_retries},
                      {"timeout_s", cfg.timeout_s},
                      {"api_key", cfg.api_key.empty() ? "none" : cfg.api_key_source}};
  j["ca_bundle"] = cfg.ca_bundle.empty() ? "system" : cfg.ca_bundle;
  j["max_tokens"] = cfg.max_tokens > 0 ? nlohmann::json(cfg.max_tokens) : nlohmann::json("not sent");
  return j;
}

JudgeClient::JudgeClient(JudgeConfig cfg) : cfg_(std::move(cfg)) { check_judge_config(cfg_); }

nlohmann::json JudgeClient::request_body(const std::string& prompt) const {
  nlohmann::json body = {{"model", cfg_.model},
                         {"messages", nlohmann::json::array({{{"role", "user"}, {"content", prompt}}})},
                         {"temperature", cfg_.temperature}};
  if (cfg_.max_tokens > 0) body["max_tokens"] = cfg_.max_tokens;
  return body;
}

JudgeReply JudgeClient::complete(const std::string& prompt) {
  const std::string url = judge_endpoint(cfg_);
  // A judge prompt may hold any bytes the model produced: replace invalid UTF-8 rather than throw.
  const std::string body = request_body(prompt).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (called_before_ && cfg_.interval_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(cfg_.interval_s));
  called_before_ = true;
  double wait = cfg_.backoff_s;
  std::string last_problem;
  long last_status = 0;
  for (int attempt = 1; attempt <= cfg_.max_retries + 1; ++attempt) {
    const HttpResult r = post_json(url, body, cfg_.api_key, cfg_.timeout_s, cfg_.ca_bundle);
    if (r.status == 200) {
      nlohmann::json raw = nlohmann::json::parse(r.body, nullptr, /*allow_exceptions=*/false);
      const nlohmann::json* content = nullptr;
      if (raw.is_object() && raw.contains("choices") && raw["choices"].is_array() && !raw["choices"].empty()) {
        const auto& c0 = raw["choices"][0];
        if (c0.is_object() && c0.contains("message") && c0["message"].is_object() && c0["message"].contains("content") &&
            c0["message"]["content"].is_string())
          content = &c0["message"]["content"];
      }
      if (content != nullptr) return JudgeReply{content->get<std::string>(), raw, attempt};
      // A 200 without choices[0].message.content: a proxy hiccup or a truncated body; worth a retry.
      last_problem = "HTTP 200 without choices[0].message.content: " + excerpt(r.body);
      last_status = 200;
    } else if (r.status == 0) {
      last_problem = "network error: " + r.network_error;
      last_status = 0;
    } else {
      last_problem = fmt::format("HTTP {}: {}", r.status, excerpt(r.body));
      last_status = r.status;
      if (!retryable_status(r.status)) {
        throw JudgeError(fmt::format("judge {}: {} (not retried: check the URL, model and API key)", url, last_problem),
                         r.status, /*retryable=*/false);
      }
    }
    if (attempt <= cfg_.max_retries) {
      std::this_thread::sleep_for(std::chrono::duration<double>(wait));
      wait = std::min(wait * 2.0, cfg_.backoff_max_s);
    }
  }
  throw JudgeError(fmt::format("judge {}: {} (gave up after {} attempts)", url, last_problem, cfg_.max_retries + 1),
                   last_status, /*retryable=*/true);
}

std::string sha256_hex(const std::string& bytes) {
  static const uint32_t k[64] = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
      0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
      0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
      0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
      0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
      0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
      0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
      0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  // Padding: 0x80, zeros to 56 mod 64, then the bit length big-endian.
  std::string msg = bytes;
  msg.push_back(static_cast<char>(0x80));
  while (msg.size() % 64 != 56) msg.push_back('\0');
  const uint64_t bits = static_cast<uint64_t>(bytes.size()) * 8;
  for (int i = 7; i >= 0; --i) msg.push_back(static_cast<char>((bits >> (i * 8)) & 0xFF));
  auto rotr = [](uint32_t x, int n) { return (x >> n) | (x << (32 - n)); };
  auto byte = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(msg[i])); };
  for (size_t off = 0; off < msg.size(); off += 64) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i) {
      const size_t p = off + static_cast<size_t>(i) * 4;
      w[i] = (byte(p) << 24) | (byte(p + 1) << 16) | (byte(p + 2) << 8) | byte(p + 3);
    }
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
  }
  return fmt::format("{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}", h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]);
}

}  // namespace p2dpo::eval
