// One error policy for the library: throw gossamer::Error with a message a user can act on.
// The CLI maps the kind to the documented exit code (README: "Exit codes").
#pragma once
#include <stdexcept>
#include <string>

namespace gossamer {

enum class ErrorKind {
  Config,   // bad config, bad --set, bad command line: exit 2
  Runtime,  // data files, devices, I/O: exit 1
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), m_kind(kind) {}
  ErrorKind kind() const { return m_kind; }

 private:
  ErrorKind m_kind;
};

inline Error config_error(const std::string& message) {
  return Error(ErrorKind::Config, message);
}
inline Error runtime_error(const std::string& message) {
  return Error(ErrorKind::Runtime, message);
}

// Exit codes of the CLI.
inline constexpr int kExitOk = 0;
inline constexpr int kExitRuntime = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitDiverged = 3;
inline constexpr int kExitInterrupted = 130;

}  // namespace gossamer
