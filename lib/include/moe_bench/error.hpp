#pragma once

#include <stdexcept>
#include <string>

namespace moe_bench {

/// Bad usage or bad input: the tool prints the message and exits with 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// This machine cannot run what was asked (no CUDA device, ...): exit 3.
class EnvironmentError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Exit codes of the design: 0 ok, 1 a check failed, 2 bad usage or input, 3 environment.
enum class ExitCode : int { kOk = 0, kCheckFailed = 1, kUsage = 2, kEnvironment = 3 };

}  // namespace moe_bench
