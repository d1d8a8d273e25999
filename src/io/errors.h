#pragma once
// Errors caused by what the user gave us (a file, a field, a flag), as opposed to bugs.
// The CLI prints the message and exits with status 2; the message always names the file
// (or flag) and the field or problem, so the user can fix the input without a debugger.
#include <stdexcept>
#include <string>

namespace p2dpo {

class InputError : public std::runtime_error {
 public:
  // `where` is a file path or a CLI flag; `problem` says what is wrong and, where known, the field.
  InputError(const std::string& where, const std::string& problem)
      : std::runtime_error(where + ": " + problem), where_(where) {}
  const std::string& where() const { return where_; }

 private:
  std::string where_;
};

}  // namespace p2dpo
