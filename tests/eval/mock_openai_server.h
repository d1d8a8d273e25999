#pragma once
// A scripted OpenAI-compatible HTTP server on 127.0.0.1 (a free port) for the judge tests: each
// request gets the next scripted response (status, body, optional delay); when the script is used
// up, every request gets the fallback. Request bodies and headers are recorded for assertions.
// One thread accepts; each connection is served on its own thread (a delayed reply must not block
// the client's next attempt). Responses close the connection.
#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace p2dpo::test {

struct MockResponse {
  int status = 200;
  std::string body;
  int delay_ms = 0;  // wait before answering (to exercise client timeouts)
};

struct MockRequest {
  std::string method, path, headers, body;
};

class MockOpenAiServer {
 public:
  MockOpenAiServer();  // binds and starts listening; throws std::runtime_error on failure
  ~MockOpenAiServer();
  MockOpenAiServer(const MockOpenAiServer&) = delete;
  MockOpenAiServer& operator=(const MockOpenAiServer&) = delete;

  int port() const { return port_; }
  std::string base_url() const;  // "http://127.0.0.1:PORT/v1"

  void push(MockResponse r);               // appended to the script
  void set_fallback(MockResponse r);       // after the script
  std::vector<MockRequest> requests() const;

  // A chat-completions response object whose choices[0].message.content is `content`.
  static std::string completion_body(const std::string& content);

 private:
  void accept_loop();
  void serve(int fd);

  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  mutable std::mutex mu_;
  std::vector<std::thread> workers_;
  std::vector<MockResponse> script_;
  size_t next_ = 0;
  MockResponse fallback_;
  std::vector<MockRequest> requests_;
};

}  // namespace p2dpo::test
