// error.h: the one exception type nimbus throws, and a check macro. A neutral header (kernels/common/):
// kernels, the engine, data and apps all report errors this way, and kernels include nothing from engine/.
//
// Errors are for bad input (wrong shapes, devices, corrupt files), not for
// internal invariants; their message says which op or file and what is wrong,
// e.g. "conv2d: input (2,3,8,8) has 3 channels but weight (4,5,3,3) expects 5".
#pragma once
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>

namespace nimbus {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
inline void format_into(std::ostringstream&) {}
template <typename T, typename... Rest>
void format_into(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  format_into(os, rest...);
}
}  // namespace detail

// str("a", 1, "b") == "a1b": builds messages without printf formats.
template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  detail::format_into(os, args...);
  return os.str();
}

// exact_str(x): the shortest of %.15g and %.17g that reads back as x, for a number written to a file
// that is read back or compared (a best score, a hyper-parameter, a run setting): str() keeps 6 digits.
inline std::string exact_str(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.15g", x);
  if (std::strtod(buf, nullptr) != x) std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}

}  // namespace nimbus

// NIMBUS_CHECK(cond, parts...): throw nimbus::Error(str(parts...)) when cond is false.
#define NIMBUS_CHECK(cond, ...)                                  \
  do {                                                           \
    if (!(cond)) throw ::nimbus::Error(::nimbus::str(__VA_ARGS__)); \
  } while (0)
