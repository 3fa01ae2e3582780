/* targets.h: the fuzz targets, one function per reader of untrusted files, shared by the libFuzzer
 * programs (fuzz_<name>.cpp, built with clang: -DNIMBUS_FUZZ=ON) and by the g++ test that replays
 * the committed corpora in every build (tests/data/test_fuzz_corpora.cpp).
 *
 * Each target writes the input to a file (the readers take paths) and reads it. A clean nimbus::Error
 * is the expected answer to a bad file; anything else (a crash, a sanitizer report, another
 * exception such as std::bad_alloc, memory above libFuzzer's -rss_limit_mb) is a finding.
 */
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "data/geotiff.h"
#include "data/sen12mscr.h"
#include "engine/io/safetensors.h"
#include "kernels/common/error.h"

namespace nimbus::fuzz {

// The input as a file of this process (reused from call to call).
inline std::string as_file(const uint8_t* data, size_t size, const char* ext) {
  const std::string path = std::string("/tmp/nimbus_fuzz_") + std::to_string(::getpid()) + ext;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return path;
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
  return path;
}

// Returns true when the input was read, false when it was refused with an Error.
inline bool geotiff(const uint8_t* data, size_t size) {
  try {
    const data::Raster r = data::read_geotiff(as_file(data, size, ".tif"));
    return r.data.size() == size_t(r.bands) * size_t(r.width) * size_t(r.height);
  } catch (const Error&) {
    return false;
  }
}

inline bool safetensors(const uint8_t* data, size_t size) {
  try {
    (void)load_safetensors(as_file(data, size, ".safetensors"));
    return true;
  } catch (const Error&) {
    return false;
  }
}

inline bool sen12mscr_list(const uint8_t* data, size_t size) {
  try {
    (void)data::read_sen12mscr_list(as_file(data, size, ".csv"));
    return true;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace nimbus::fuzz
