#include "eval/mock_openai_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace p2dpo::test {

namespace {

const char* reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
  }
}

void send_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return;  // the client gave up (timeout): nothing to do
    off += static_cast<size_t>(n);
  }
}

}  // namespace

MockOpenAiServer::MockOpenAiServer() {
  fallback_ = {200, completion_body("Rating: 3"), 0};
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  if (listen_fd_ < 0) throw std::runtime_error("mock server: socket() failed");
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;  // any free port
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listen_fd_, 16) != 0) {
    ::close(listen_fd_);
    throw std::runtime_error("mock server: bind/listen on 127.0.0.1 failed");
  }
  socklen_t len = sizeof addr;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

MockOpenAiServer::~MockOpenAiServer() {
  stop_ = true;
  if (acceptor_.joinable()) acceptor_.join();
  std::vector<std::thread> workers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    workers.swap(workers_);
  }
  for (auto& t : workers) t.join();
  ::close(listen_fd_);
}

std::string MockOpenAiServer::base_url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1"; }

void MockOpenAiServer::push(MockResponse r) {
  std::lock_guard<std::mutex> lock(mu_);
  script_.push_back(std::move(r));
}

void MockOpenAiServer::set_fallback(MockResponse r) {
  std::lock_guard<std::mutex> lock(mu_);
  fallback_ = std::move(r);
}

std::vector<MockRequest> MockOpenAiServer::requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return requests_;
}

std::string MockOpenAiServer::completion_body(const std::string& content) {
  nlohmann::json j = {{"id", "chatcmpl-mock"},
                      {"object", "chat.completion"},
                      {"model", "mock-judge"},
                      {"choices", nlohmann::json::array({{{"index", 0},
                                                          {"message", {{"role", "assistant"}, {"content", content}}},
                                                          {"finish_reason", "stop"}}})}};
  return j.dump();
}

void MockOpenAiServer::accept_loop() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;  // wake up regularly to notice stop_
    const int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) continue;
    std::lock_guard<std::mutex> lock(mu_);
    workers_.emplace_back([this, fd] { serve(fd); });
  }
}

void MockOpenAiServer::serve(int fd) {
  std::string data;
  char buf[4096];
  size_t header_end = std::string::npos;
  size_t content_length = 0;
  // Read the head, then Content-Length bytes of body.
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 2000) <= 0) break;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    data.append(buf, static_cast<size_t>(n));
    if (header_end == std::string::npos) {
      header_end = data.find("\r\n\r\n");
      if (header_end != std::string::npos) {
        std::string head = data.substr(0, header_end);
        for (char& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        const size_t pos = head.find("content-length:");
        if (pos != std::string::npos) content_length = std::stoul(head.substr(pos + 15));
      }
    }
    if (header_end != std::string::npos && data.size() >= header_end + 4 + content_length) break;
  }
  MockRequest req;
  if (header_end != std::string::npos) {
    const std::string head = data.substr(0, header_end);
    const size_t sp1 = head.find(' '), sp2 = head.find(' ', sp1 + 1);
    req.method = head.substr(0, sp1);
    req.path = head.substr(sp1 + 1, sp2 - sp1 - 1);
    req.headers = head;
    req.body = data.substr(header_end + 4, content_length);
  }
  MockResponse resp;
  {
    std::lock_guard<std::mutex> lock(mu_);
    requests_.push_back(req);
    resp = next_ < script_.size() ? script_[next_++] : fallback_;
  }
  if (resp.delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(resp.delay_ms));
  const std::string out = "HTTP/1.1 " + std::to_string(resp.status) + " " + reason(resp.status) +
                          "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(resp.body.size()) +
                          "\r\nConnection: close\r\n\r\n" + resp.body;
  send_all(fd, out);
  ::close(fd);
}

}  // namespace p2dpo::test
