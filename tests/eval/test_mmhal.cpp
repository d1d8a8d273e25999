// MMHal-Bench: the judge client against a scripted loopback server (retries, refusals, timeouts,
// config), the judge template check, the official rating parser and summary, and an end-to-end run
// of the tiny LLaVA on two hand-made questions judged by the mock server.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "cli_run.h"
#include "eval/judge_client.h"
#include "eval/mmhal.h"
#include "eval/mock_openai_server.h"
#include "image/image_test_util.h"
#include "io/atomic_file.h"
#include "io/json_io.h"
#include "models/load.h"
#include "test_paths.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace p2dpo::eval;
using p2dpo::test::data_path;
using p2dpo::test::error_of;
using p2dpo::test::MockOpenAiServer;
using p2dpo::test::MockResponse;
using p2dpo::test::scratch_dir;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// The sha256 of tests/data/eval/mmhal-mini/judge_template.txt (a test template, not the official one).
const char* kTestTemplateSha = "5052cc4146bf1710d93d0cfafdabcd9a7524142611dab386053d814d84c44127";

JudgeConfig fast_config(const MockOpenAiServer& server) {
  JudgeConfig c;
  c.url = server.base_url();
  c.model = "mock-judge";
  c.api_key = "sk-test";
  c.timeout_s = 10;
  c.max_retries = 3;
  c.backoff_s = 0.01;  // keep the tests quick; the back-off itself is not timed
  c.backoff_max_s = 0.02;
  return c;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// A loopback port with nobody listening (bound, then closed).
int closed_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace

TEST(MmhalSha256, KnownVectorsAndBlockBoundaries) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // Lengths around the padding boundaries against the tests' independent implementation.
  for (size_t n : {55u, 56u, 63u, 64u, 65u, 119u, 120u, 1000u}) {
    std::string s;
    for (size_t i = 0; i < n; ++i) s.push_back(static_cast<char>((i * 37 + 11) & 0xFF));
    EXPECT_EQ(sha256_hex(s), p2dpo::test::sha256_hex(reinterpret_cast<const uint8_t*>(s.data()), s.size())) << n;
  }
  EXPECT_EQ(sha256_hex(p2dpo::io::read_file(data_path("eval/mmhal-mini/judge_template.txt"))), kTestTemplateSha);
}

TEST(MmhalJudgeClient, SendsTheOfficialRequest) {
  MockOpenAiServer server;
  server.push({200, MockOpenAiServer::completion_body("Fine. Rating: 4"), 0});
  JudgeClient client(fast_config(server));
  const auto reply = client.complete("judge this");
  EXPECT_EQ(reply.content, "Fine. Rating: 4");
  EXPECT_EQ(reply.attempts, 1);
  EXPECT_EQ(reply.raw["model"], "mock-judge");
  const auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].method, "POST");
  EXPECT_EQ(reqs[0].path, "/v1/chat/completions");
  EXPECT_TRUE(contains(reqs[0].headers, "Authorization: Bearer sk-test")) << reqs[0].headers;
  const auto body = nlohmann::json::parse(reqs[0].body);
  EXPECT_EQ(body, (nlohmann::json{{"model", "mock-judge"},
                                  {"messages", {{{"role", "user"}, {"content", "judge this"}}}},
                                  {"temperature", 0.0}}))
      << "no max_tokens unless asked, as the official judge";

  // No key: no Authorization header; max_tokens sent when set.
  auto cfg = fast_config(server);
  cfg.api_key.clear();
  cfg.max_tokens = 64;
  JudgeClient keyless(cfg);
  keyless.complete("again");
  const auto second = server.requests().back();
  EXPECT_FALSE(contains(second.headers, "Authorization")) << second.headers;
  EXPECT_EQ(nlohmann::json::parse(second.body)["max_tokens"], 64);
}

TEST(MmhalJudgeClient, RetriesServerErrorsAndRateLimits) {
  MockOpenAiServer server;
  server.push({500, "{\"error\": \"boom\"}", 0});
  server.push({429, "{\"error\": \"slow down\"}", 0});
  server.push({503, "", 0});
  server.push({200, "{\"choices\": []}", 0});  // a 200 without content is retried too
  server.push({200, MockOpenAiServer::completion_body("Rating: 6"), 0});
  auto cfg = fast_config(server);
  cfg.max_retries = 4;
  JudgeClient client(cfg);
  const auto reply = client.complete("p");
  EXPECT_EQ(reply.content, "Rating: 6");
  EXPECT_EQ(reply.attempts, 5);
  EXPECT_EQ(server.requests().size(), 5u);
}

TEST(MmhalJudgeClient, GivesUpAfterBoundedRetries) {
  MockOpenAiServer server;
  server.set_fallback({500, "{\"error\": \"always down\"}", 0});
  auto cfg = fast_config(server);
  cfg.max_retries = 2;
  JudgeClient client(cfg);
  try {
    client.complete("p");
    FAIL() << "expected a JudgeError";
  } catch (const JudgeError& e) {
    EXPECT_TRUE(e.retryable());
    EXPECT_EQ(e.status(), 500);
    const std::string msg = e.what();
    EXPECT_TRUE(contains(msg, server.base_url() + "/chat/completions")) << msg;
    EXPECT_TRUE(contains(msg, "HTTP 500: {\"error\": \"always down\"}")) << msg;
    EXPECT_TRUE(contains(msg, "gave up after 3 attempts")) << msg;
  }
  EXPECT_EQ(server.requests().size(), 3u);
}

TEST(MmhalJudgeClient, DoesNotRetryClientErrors) {
  MockOpenAiServer server;
  server.push({400, "{\"error\": {\"message\": \"model not found\"}}", 0});
  JudgeClient client(fast_config(server));
  try {
    client.complete("p");
    FAIL() << "expected a JudgeError";
  } catch (const JudgeError& e) {
    EXPECT_FALSE(e.retryable());
    EXPECT_EQ(e.status(), 400);
    EXPECT_TRUE(contains(e.what(), "HTTP 400")) << e.what();
    EXPECT_TRUE(contains(e.what(), "model not found")) << e.what();
    EXPECT_TRUE(contains(e.what(), "not retried")) << e.what();
  }
  EXPECT_EQ(server.requests().size(), 1u);
}

TEST(MmhalJudgeClient, NetworkErrorsAndTimeoutsAreRetried) {
  {
    JudgeConfig cfg;
    cfg.url = "http://127.0.0.1:" + std::to_string(closed_port()) + "/v1";
    cfg.max_retries = 1;
    cfg.backoff_s = 0.01;
    JudgeClient client(cfg);
    try {
      client.complete("p");
      FAIL() << "expected a JudgeError";
    } catch (const JudgeError& e) {
      EXPECT_TRUE(e.retryable());
      EXPECT_EQ(e.status(), 0);
      EXPECT_TRUE(contains(e.what(), cfg.url + "/chat/completions: network error")) << e.what();
      EXPECT_TRUE(contains(e.what(), "gave up after 2 attempts")) << e.what();
    }
  }
  MockOpenAiServer server;
  server.push({200, MockOpenAiServer::completion_body("late"), 1500});  // answered after the client gave up
  server.push({200, MockOpenAiServer::completion_body("Rating: 2"), 0});
  auto cfg = fast_config(server);
  cfg.timeout_s = 0.3;
  JudgeClient client(cfg);
  const auto reply = client.complete("p");
  EXPECT_EQ(reply.content, "Rating: 2");
  EXPECT_EQ(reply.attempts, 2);
}

TEST(MmhalJudgeConfig, EnvironmentFileAndChecks) {
  ::setenv("P2DPO_JUDGE_URL", "http://localhost:8000/v1/", 1);
  ::setenv("P2DPO_JUDGE_MODEL", "local-judge", 1);
  ::unsetenv("P2DPO_JUDGE_API_KEY");
  ::setenv("OPENAI_API_KEY", "sk-env", 1);
  ::setenv("P2DPO_JUDGE_MAX_RETRIES", "7", 1);
  JudgeConfig c;
  apply_judge_environment(c);
  EXPECT_EQ(c.url, "http://localhost:8000/v1/");
  EXPECT_EQ(judge_endpoint(c), "http://localhost:8000/v1/chat/completions");
  EXPECT_EQ(c.model, "local-judge");
  EXPECT_EQ(c.api_key, "sk-env");
  EXPECT_EQ(c.api_key_source, "env OPENAI_API_KEY");
  EXPECT_EQ(c.max_retries, 7);
  ::setenv("P2DPO_JUDGE_API_KEY", "sk-p2dpo", 1);
  apply_judge_environment(c);
  EXPECT_EQ(c.api_key, "sk-p2dpo") << "P2DPO_JUDGE_API_KEY wins over OPENAI_API_KEY";
  ::setenv("P2DPO_JUDGE_TIMEOUT_S", "soon", 1);
  EXPECT_TRUE(contains(error_of([&] { apply_judge_environment(c); }), "P2DPO_JUDGE_TIMEOUT_S: 'soon' is not a number"));
  for (const char* v : {"P2DPO_JUDGE_URL", "P2DPO_JUDGE_MODEL", "P2DPO_JUDGE_API_KEY", "OPENAI_API_KEY",
                        "P2DPO_JUDGE_MAX_RETRIES", "P2DPO_JUDGE_TIMEOUT_S"})
    ::unsetenv(v);
  // The evaluation spec's names (§6.4) work too, under p2dpo's own.
  ::setenv("JUDGE_BASE_URL", "http://127.0.0.1:9/v1", 1);
  ::setenv("JUDGE_MODEL", "spec-judge", 1);
  ::setenv("JUDGE_API_KEY", "sk-spec", 1);
  ::setenv("OPENAI_API_KEY", "sk-openai", 1);
  ::setenv("JUDGE_TIMEOUT_S", "30", 1);
  ::setenv("JUDGE_MAX_RETRIES", "3", 1);
  JudgeConfig spec;
  apply_judge_environment(spec);
  EXPECT_EQ(spec.url, "http://127.0.0.1:9/v1");
  EXPECT_EQ(spec.model, "spec-judge");
  EXPECT_EQ(spec.api_key, "sk-spec") << "JUDGE_API_KEY wins over OPENAI_API_KEY";
  EXPECT_EQ(spec.api_key_source, "env JUDGE_API_KEY");
  EXPECT_EQ(spec.timeout_s, 30.0);
  EXPECT_EQ(spec.max_retries, 3);
  ::setenv("P2DPO_JUDGE_MODEL", "p2dpo-judge", 1);
  ::setenv("JUDGE_MAX_RETRIES", "2.5", 1);
  EXPECT_TRUE(contains(error_of([&] { apply_judge_environment(spec); }), "JUDGE_MAX_RETRIES: '2.5' is not a count"));
  EXPECT_EQ(spec.model, "p2dpo-judge") << "p2dpo's own name wins";
  for (const char* v : {"JUDGE_BASE_URL", "JUDGE_MODEL", "JUDGE_API_KEY", "OPENAI_API_KEY", "JUDGE_TIMEOUT_S",
                        "JUDGE_MAX_RETRIES", "P2DPO_JUDGE_MODEL"})
    ::unsetenv(v);

  const std::string dir = scratch_dir("mmhal_judge_config");
  p2dpo::io::write_file_atomic(dir + "/judge.json",
                               R"({"url": "https://judge.example/v1/chat/completions", "model": "m", "api_key": "k", "max_retries": 2})");
  JudgeConfig f;
  apply_judge_config_file(f, dir + "/judge.json");
  EXPECT_EQ(judge_endpoint(f), "https://judge.example/v1/chat/completions") << "a full endpoint is kept";
  EXPECT_EQ(f.model, "m");
  EXPECT_EQ(f.api_key_source, "config file");
  EXPECT_EQ(f.max_retries, 2);
  EXPECT_EQ(judge_config_json(f)["api_key"], "config file") << "the key itself is never recorded";
  EXPECT_EQ(judge_config_json(f)["ca_bundle"], "system");
  // A private CA for a self-hosted https endpoint: from the file, the environment, checked to exist.
  p2dpo::io::write_file_atomic(dir + "/ca.pem", "-----BEGIN CERTIFICATE-----\n");
  p2dpo::io::write_file_atomic(dir + "/judge-ca.json", R"({"ca_bundle": ")" + dir + R"(/ca.pem"})");
  apply_judge_config_file(f, dir + "/judge-ca.json");
  EXPECT_EQ(f.ca_bundle, dir + "/ca.pem");
  EXPECT_EQ(judge_config_json(f)["ca_bundle"], dir + "/ca.pem");
  EXPECT_NO_THROW(check_judge_config(f));
  ::setenv("JUDGE_CA_BUNDLE", (dir + "/missing.pem").c_str(), 1);
  apply_judge_environment(f);
  ::unsetenv("JUDGE_CA_BUNDLE");
  EXPECT_EQ(f.ca_bundle, dir + "/missing.pem");
  EXPECT_TRUE(contains(error_of([&] { check_judge_config(f); }), "--judge-ca-bundle: '" + dir + "/missing.pem' is not a file"));
  f.ca_bundle.clear();
  p2dpo::io::write_file_atomic(dir + "/bad.json", R"({"modle": "m"})");
  EXPECT_TRUE(contains(error_of([&] { apply_judge_config_file(f, dir + "/bad.json"); }), "unknown key 'modle'"));
  f.url = "judge.example";
  EXPECT_TRUE(contains(error_of([&] { check_judge_config(f); }), "--judge-url: 'judge.example' is not an http"));
  f.url = "http://x";
  f.timeout_s = 0;
  EXPECT_TRUE(contains(error_of([&] { check_judge_config(f); }), "--judge-timeout"));
}

TEST(MmhalTemplate, PythonFormatAndShaCheck) {
  EXPECT_EQ(python_format("a {} b {} {{x}} }}", {"1", "2"}, "t"), "a 1 b 2 {x} }");
  EXPECT_EQ(python_format("{1}{0}{1}", {"a", "b"}, "t"), "bab");
  EXPECT_EQ(python_format("{}", {"{}"}, "t"), "{}") << "arguments are not formatted again";
  EXPECT_TRUE(contains(error_of([] { python_format("{} {0}", {"a"}, "t"); }), "mixes automatic"));
  EXPECT_TRUE(contains(error_of([] { python_format("{name}", {"a"}, "t"); }), "only positional"));
  EXPECT_TRUE(contains(error_of([] { python_format("a } b", {}, "t"); }), "single '}'"));
  EXPECT_TRUE(contains(error_of([] { python_format("a { b", {}, "t"); }), "t: unclosed '{' at byte 2"));
  EXPECT_TRUE(contains(error_of([] { python_format("{} {}", {"a"}, "t"); }), "field 1 at byte 3 has no argument"));

  const std::string path = data_path("eval/mmhal-mini/judge_template.txt");
  std::vector<std::string> warnings;
  // The test template is not the official one: refused under the spec's hash...
  const auto msg = error_of([&] { read_judge_template(path, kMmhalTemplateSha256, false, warnings); });
  EXPECT_TRUE(contains(msg, path + ": sha256 " + kTestTemplateSha)) << msg;
  EXPECT_TRUE(contains(msg, kMmhalTemplateSha256)) << msg;
  EXPECT_TRUE(contains(msg, "--allow-template-change")) << msg;
  EXPECT_TRUE(warnings.empty());
  // ... accepted with a warning when allowed, and silently under its own hash.
  EXPECT_FALSE(read_judge_template(path, kMmhalTemplateSha256, true, warnings).empty());
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_TRUE(contains(warnings[0], "used because of --allow-template-change"));
  warnings.clear();
  const std::string t = read_judge_template(path, kTestTemplateSha, false, warnings);
  EXPECT_TRUE(warnings.empty());

  MmhalQuestion q;
  q.image_content = {"Square", "Circle"};
  q.question = "What colour?";
  q.gt_answer = "Red.";
  const std::string prompt = mmhal_judge_prompt(t, q, "Blue {really}.");
  EXPECT_TRUE(contains(prompt, "### Image Contents\nSquare, Circle\n\n### Question\nWhat colour?\n\n### Standard "
                               "Human-Generated Answer\nRed.\n\n### LMM Response to Evaluate\nBlue {really}.\n"))
      << prompt;
  EXPECT_TRUE(contains(prompt, "Braces stay braces: {like this}."));

  // A template with three fields cannot take the four official arguments.
  const std::string dir = scratch_dir("mmhal_template");
  p2dpo::io::write_file_atomic(dir + "/three.txt", "{} {} {}");
  EXPECT_TRUE(contains(error_of([&] { read_judge_template(dir + "/three.txt", sha256_hex("{} {} {}"), false, warnings); }),
                       "exactly four {} fields"));
  EXPECT_TRUE(contains(error_of([&] { read_judge_template("", kMmhalTemplateSha256, false, warnings); }),
                       "--judge-template: required"));
}

TEST(MmhalRating, OfficialParserEdgeCases) {
  auto score = [](const std::string& s) { return mmhal_rating(s).score; };
  EXPECT_EQ(score("The answer is accurate.\nRating: 5, very informative"), 5);
  EXPECT_EQ(score("rating: 5"), 5);
  EXPECT_EQ(score("RATING: 6"), 6) << "the reply is lowercased";
  EXPECT_EQ(score("Rating:5"), 0) << "no space: not found";
  EXPECT_EQ(score("Rating : 5"), 0);
  EXPECT_EQ(score("Rating: 2. To repeat, Rating: 2"), 2) << "the same rating twice is one rating";
  EXPECT_EQ(score("Rating: 2 or maybe Rating: 4"), 0) << "two ratings: 0";
  EXPECT_EQ(mmhal_rating("Rating: 2 or maybe Rating: 4").found, (std::vector<int>{2, 4}));
  EXPECT_EQ(score("Rating: 7"), 0) << "only 0..6 are looked for";
  EXPECT_EQ(score("Rating: 10"), 1) << "'rating: 10' contains 'rating: 1' (official quirk)";
  EXPECT_EQ(score("Rating: 0, not informative, with hallucination"), 0);
  EXPECT_EQ(mmhal_rating("Rating: 0").found, (std::vector<int>{0}));
  EXPECT_EQ(score(""), 0);
  // The template's own list of ratings quoted back: every s found, so 0.
  EXPECT_EQ(score("- Rating: 6\n- Rating: 5\n- Rating: 4\n- Rating: 3\n- Rating: 2\n- Rating: 1\n- Rating: 0"), 0);
}

TEST(MmhalScore, SummaryMatchesTheOfficialScript) {
  // 96 questions in the official type order with scores (5i + i/8) % 7; the expected lines were
  // printed by summarize_gpt_mmhal.py's formulas in Python 3.
  std::vector<MmhalQuestion> qs(96);
  std::vector<int> scores(96);
  for (size_t i = 0; i < 96; ++i) {
    qs[i].index = i;
    qs[i].question_type = mmhal_question_types()[i % 8];
    scores[i] = static_cast<int>((i * 5 + i / 8) % 7);
  }
  const auto s = score_mmhal(qs, scores);
  EXPECT_EQ(s.n, 96);
  EXPECT_DOUBLE_EQ(s.average, 291.0 / 96.0);
  EXPECT_DOUBLE_EQ(s.hallucination_rate, 40.0 / 96.0);
  ASSERT_EQ(s.per_type.size(), 8u);
  EXPECT_EQ(s.per_type[1].type, "adversarial");
  EXPECT_DOUBLE_EQ(s.per_type[1].average, 3.0);
  EXPECT_DOUBLE_EQ(s.per_type[5].average, 31.0 / 12.0);
  EXPECT_TRUE(s.warnings.empty());
  EXPECT_EQ(mmhal_official_lines(s),
            (std::vector<std::string>{"Average score: 3.03", "Hallucination rate: 0.42",
                                      "Average score for each question type: 3.25,3.0,2.75,3.08,3.42,2.58,2.92,3.25"}));
  const auto doc = mmhal_results_document(s, {{"mode", "test"}});
  EXPECT_EQ(doc["benchmark"], "mmhal");
  EXPECT_DOUBLE_EQ(doc["results"]["per_type"]["environment"]["average"].get<double>(), 31.0 / 12.0);

  // A subset: no official lines, a warning.
  const auto sub = score_mmhal({qs[0], qs[1]}, {5, 1});
  EXPECT_DOUBLE_EQ(sub.average, 3.0);
  EXPECT_DOUBLE_EQ(sub.hallucination_rate, 0.5);
  EXPECT_TRUE(mmhal_official_lines(sub).empty());
  ASSERT_EQ(sub.warnings.size(), 1u);
  EXPECT_TRUE(contains(sub.warnings[0], "2 questions scored"));
}

TEST(MmhalData, QuestionsAndImages) {
  const auto qs = read_mmhal_questions(data_path("eval/mmhal-mini/questions.json"));
  ASSERT_EQ(qs.size(), 2u);
  EXPECT_EQ(qs[1].question_type, "adversarial");
  EXPECT_EQ(qs[0].image_content, (std::vector<std::string>{"Square", "Circle"}));
  const std::string images = data_path("eval/mmhal-mini/images");
  EXPECT_EQ(mmhal_image_path(qs[0], images), images + "/4f1a2b3c4d5e6f70.png") << "image_id + .png";
  EXPECT_EQ(mmhal_image_path(qs[1], images), images + "/photo_b_o.png") << "the file name of image_src";
  auto missing = qs[0];
  missing.image_id = "nope";
  const auto msg = error_of([&] { mmhal_image_path(missing, images); });
  EXPECT_TRUE(contains(msg, "no image for question 0 (image_id nope); tried " + images + "/4f1a2b3c4d5e6f70_o.jpg, " +
                                images + "/nope.jpg")) << msg;

  const std::string dir = scratch_dir("mmhal_bad_questions");
  p2dpo::io::write_file_atomic(dir + "/q.json", R"([{"question_type": "attribute", "image_id": "x", "question": "q"}])");
  EXPECT_TRUE(contains(error_of([&] { read_mmhal_questions(dir + "/q.json"); }), "missing required field '[0].image_content'"));
}

TEST(MmhalRunner, TinyModelEndToEndWithMockJudge) {
  static auto model = p2dpo::models::load_model(data_path("llava-tiny-s0"));
  MockOpenAiServer server;
  server.push({500, "{\"error\": \"warming up\"}", 0});  // the first call is retried
  server.push({200, MockOpenAiServer::completion_body("Accurate and detailed. Rating: 5"), 0});
  server.push({200, MockOpenAiServer::completion_body("It invents dogs. Rating: 1"), 0});

  const std::string out = scratch_dir("mmhal_run");
  MmhalRunOptions o;
  o.questions_path = data_path("eval/mmhal-mini/questions.json");
  o.images_dir = data_path("eval/mmhal-mini/images");
  o.out_dir = out;
  o.judge_template_path = data_path("eval/mmhal-mini/judge_template.txt");
  o.template_sha256 = kTestTemplateSha;
  o.conv_mode = "hf";
  o.max_new_tokens = 5;
  o.batch_size = 2;
  o.model_id = "llava-tiny-s0";
  o.judge_config = fast_config(server);
  o.progress = false;

  // The official hash refuses the test template before any generation.
  auto refused = o;
  refused.template_sha256 = kMmhalTemplateSha256;
  EXPECT_TRUE(contains(error_of([&] { run_mmhal(*model, refused); }), "--allow-template-change"));
  EXPECT_FALSE(fs::exists(out + "/answers/mmhal.jsonl"));

  const auto first = run_mmhal(*model, o);
  EXPECT_EQ(first.generated, 2);
  EXPECT_EQ(first.judged, 2);
  const auto answers = lines_of(first.answers_path);
  ASSERT_EQ(answers.size(), 2u);
  const auto a0 = nlohmann::json::parse(answers[0]);
  EXPECT_EQ(a0["prompt"], "USER: <image>\nWhat colour is the square? ASSISTANT:");
  EXPECT_EQ(a0["index"], 0);

  // The judge saw the official-format prompt with the model's answer.
  const auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 3u);
  const std::string sent = nlohmann::json::parse(reqs[2].body)["messages"][0]["content"];
  const auto a1 = nlohmann::json::parse(answers[1]);
  EXPECT_EQ(sent, python_format(p2dpo::io::read_file(o.judge_template_path),
                                {"Triangle", "How many dogs are in the picture?",
                                 "There are no dogs in the picture, only a triangle.", a1["model_answer"].get<std::string>()},
                                "t"));
  EXPECT_TRUE(contains(sent, "### Image Contents\nTriangle\n")) << sent;

  EXPECT_EQ(first.score.scores, (std::vector<int>{5, 1}));
  EXPECT_DOUBLE_EQ(first.score.average, 3.0);
  EXPECT_DOUBLE_EQ(first.score.hallucination_rate, 0.5);
  const auto results = p2dpo::io::read_json_file(out + "/results.json");
  EXPECT_EQ(results["benchmark"], "mmhal");
  EXPECT_EQ(results["results"]["per_type"]["adversarial"]["average"], 1.0);
  EXPECT_EQ(results["protocol"]["judge"]["model"], "mock-judge");
  EXPECT_EQ(results["protocol"]["judge_template_official"], false);
  EXPECT_EQ(results["protocol"]["decoding"], "greedy");
  const auto response = p2dpo::io::read_json_file(out + "/response.json");
  ASSERT_EQ(response.size(), 2u);
  EXPECT_EQ(response[1]["model_answer"], a1["model_answer"]);
  EXPECT_EQ(response[1]["gt_answer"], "There are no dogs in the picture, only a triangle.");
  const auto evaluation = p2dpo::io::read_json_file(out + "/evaluation.json");
  ASSERT_EQ(evaluation.size(), 2u);
  EXPECT_EQ(evaluation[0]["choices"][0]["message"]["content"], "Accurate and detailed. Rating: 5");
  const auto judge_lines = lines_of(first.judge_path);
  ASSERT_EQ(judge_lines.size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(judge_lines[0])["attempts"], 2);

  // Offline re-scoring from either evaluation file gives the same scores.
  const auto qs = read_mmhal_questions(o.questions_path);
  EXPECT_EQ(score_mmhal_evaluation(out + "/evaluation.json", qs).scores, (std::vector<int>{5, 1}));
  EXPECT_EQ(score_mmhal_evaluation(first.judge_path, qs).scores, (std::vector<int>{5, 1}));

  // Resume: nothing left to generate or judge.
  const auto again = run_mmhal(*model, o);
  EXPECT_EQ(again.generated, 0);
  EXPECT_EQ(again.judged, 0);
  EXPECT_EQ(server.requests().size(), 3u);

  // A judge that keeps failing: the item is recorded with its error and scored 0; the next run
  // retries it and the new judgement replaces it.
  p2dpo::io::write_file_atomic(first.judge_path, judge_lines[0] + "\n");
  server.set_fallback({503, "overloaded", 0});
  auto flaky = o;
  flaky.judge_config.max_retries = 1;
  const auto failed = run_mmhal(*model, flaky);
  EXPECT_EQ(failed.judged, 1);
  EXPECT_EQ(failed.score.judge_errors, 1);
  EXPECT_EQ(failed.score.scores, (std::vector<int>{5, 0}));
  EXPECT_TRUE(contains(nlohmann::json::parse(lines_of(first.judge_path).back())["judge_error"].get<std::string>(),
                       "HTTP 503: overloaded"));
  server.set_fallback({200, MockOpenAiServer::completion_body("Rating: 4"), 0});
  const auto retried = run_mmhal(*model, o);
  EXPECT_EQ(retried.judged, 1);
  EXPECT_EQ(retried.score.scores, (std::vector<int>{5, 4}));
  EXPECT_EQ(retried.score.judge_errors, 0);

  // A refusal (HTTP 401) stops the run and records nothing.
  p2dpo::io::write_file_atomic(first.judge_path, judge_lines[0] + "\n");
  server.set_fallback({401, "{\"error\": \"invalid api key\"}", 0});
  const auto msg = error_of([&] { run_mmhal(*model, o); });
  EXPECT_TRUE(contains(msg, "HTTP 401")) << msg;
  EXPECT_TRUE(contains(msg, "invalid api key")) << msg;
  EXPECT_EQ(lines_of(first.judge_path).size(), 1u);

  // Judging the response file made by the run (the official response format) under another --out.
  server.set_fallback({200, MockOpenAiServer::completion_body("Rating: 3"), 0});
  auto judge_only = o;
  judge_only.out_dir = scratch_dir("mmhal_judge_only");
  const auto j = judge_mmhal_answers(out + "/response.json", judge_only);
  EXPECT_EQ(j.judged, 2);
  EXPECT_EQ(j.score.scores, (std::vector<int>{3, 3}));
  EXPECT_EQ(j.results["protocol"]["mode"], "judge answers");

  // Resuming the judge file under another judge model is refused.
  judge_only.judge_config.model = "other-judge";
  EXPECT_TRUE(contains(error_of([&] { judge_mmhal_answers(out + "/response.json", judge_only); }),
                       "written with judge_model = \"mock-judge\""));
}

TEST(MmhalCli, RunJudgeAndRescoreAsAUserCallsThem) {
  using p2dpo::test::run_cli;
  const std::string questions = data_path("eval/mmhal-mini/questions.json");
  const std::string images = data_path("eval/mmhal-mini/images");
  const std::string tmpl = data_path("eval/mmhal-mini/judge_template.txt");
  const std::string model = data_path("llava-tiny-s0");
  // The test template is not the official one: refused (exit 2) before the model loads.
  const auto refused = run_cli({"eval", "mmhal", "--model", model, "--questions", questions, "--images", images,
                                "--judge-template", tmpl, "--out", scratch_dir("mmhal_cli_refused")});
  EXPECT_EQ(refused.status, 2) << refused.out;
  EXPECT_TRUE(contains(refused.out, "--allow-template-change")) << refused.out;

  MockOpenAiServer server;
  server.push({200, MockOpenAiServer::completion_body("Rating: 6"), 0});
  server.push({200, MockOpenAiServer::completion_body("Rating: 2"), 0});
  const std::string out = scratch_dir("mmhal_cli_run");
  const auto run = run_cli({"eval", "mmhal", "--model", model, "--questions", questions, "--images", images,
                            "--judge-template", tmpl, "--allow-template-change", "--judge-url", server.base_url(),
                            "--judge-model", "mock-judge", "--conv-mode", "hf", "--max-new-tokens", "4", "--decode",
                            "vcd", "--out", out, "--quiet"});
  ASSERT_EQ(run.status, 0) << run.out;
  EXPECT_TRUE(contains(run.out, "average score      4.00")) << run.out;
  const size_t warned = run.out.find("used because of --allow-template-change");
  EXPECT_NE(warned, std::string::npos) << run.out;
  EXPECT_EQ(run.out.find("used because of --allow-template-change", warned + 1), std::string::npos) << "warned once";
  const auto results = p2dpo::io::read_json_file(out + "/results.json");
  EXPECT_EQ(results["protocol"]["decoding"]["mode"], "vcd");
  EXPECT_EQ(results["results"]["scores"], (nlohmann::json{6, 2}));

  // Re-scoring the run's evaluation offline.
  const auto rescored = run_cli({"eval", "mmhal", "--evaluation", out + "/evaluation.json", "--questions", questions, "--json"});
  ASSERT_EQ(rescored.status, 0) << rescored.out;
  EXPECT_TRUE(contains(rescored.out, "\"average_score\": 4.0")) << rescored.out;

  const auto bad_decode = run_cli({"eval", "pope", "--model", model, "--questions", questions, "--images", images,
                                   "--decode", "beam"});
  EXPECT_EQ(bad_decode.status, 2) << bad_decode.out;
  EXPECT_TRUE(contains(bad_decode.out, "--decode: unknown decoding 'beam' (greedy, vcd)")) << bad_decode.out;
}
