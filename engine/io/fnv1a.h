// fnv1a.h: FNV-1a, 64 bits: the project's one non-cryptographic fingerprint (checkpoint checksums, a
// run's data index, an --init file's content). Not for security: for "is this the same bytes".
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace nimbus {

struct Fnv1a {
  uint64_t h = 0xcbf29ce484222325ULL;
  void bytes(const void* p, size_t n) {
    const unsigned char* c = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ c[i]) * 0x100000001b3ULL;
  }
  void text(const std::string& s) { bytes(s.c_str(), s.size() + 1); }  // with the '\0' separator
};

}  // namespace nimbus
