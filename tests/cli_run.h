#pragma once
// Runs the p2dpo executable (P2DPO_EXE, defined for p2dpo_tests) with arguments, capturing its
// output and exit status: what the CLI tests of every stage share.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>
#include <vector>

namespace p2dpo::test {

struct CliRun {
  int status = -1;
  std::string out;  // stdout, plus stderr when merged
};

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

inline CliRun run_cli(const std::vector<std::string>& args, bool merge_stderr = true) {
  std::string cmd = shell_quote(P2DPO_EXE);
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += merge_stderr ? " 2>&1" : " 2>/dev/null";
  CliRun r;
  FILE* p = popen(cmd.c_str(), "r");
  std::array<char, 4096> buf{};
  while (p && fgets(buf.data(), buf.size(), p)) r.out += buf.data();
  int st = p ? pclose(p) : -1;
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

}  // namespace p2dpo::test
