/* targets.h: the fuzz targets, one function per reader of untrusted files, shared by the libFuzzer
 * programs (fuzz_<name>.cpp, built with clang: -DNIMBUS_FUZZ=ON) and by the g++ test that replays
 * the committed corpora in every build (tests/data/test_fuzz_corpora.cpp).
 *
 * Each target writes the input to a file (the readers take paths) and reads it (a safetensors file is
 * then also checked as a checkpoint). A clean nimbus::Error
 * is the expected answer to a bad file; anything else (a crash, a sanitizer report, another
 * exception such as std::bad_alloc, memory above libFuzzer's -rss_limit_mb) is a finding.
 */
#pragma once
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include <filesystem>
#include <memory>

#include "data/eurosat.h"
#include "data/geotiff.h"
#include "data/raster_pack.h"
#include "data/sen12mscr.h"
#include "engine/io/checkpoint.h"
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

// Returns true when the input was read, false when it was refused with an Error. A sparse file
// (blocks not stored read as nodata) may claim a large image in a few bytes, and reading it whole
// is right; so past 2^24 values the target reads a window of at most that many from the corner,
// and the fuzzer's memory limit measures the reader rather than the claim.
inline bool geotiff(const uint8_t* data, size_t size) {
  try {
    const std::string path = as_file(data, size, ".tif");
    const data::TiffInfo info = data::read_tiff_info(path);
    constexpr int64_t kValues = int64_t(1) << 24;
    const int64_t width = std::min<int64_t>(info.width, std::max<int64_t>(1, kValues / info.bands));
    const int64_t height = std::min<int64_t>(info.height, std::max<int64_t>(1, kValues / (info.bands * width)));
    const data::Raster r = width == info.width && height == info.height
                               ? data::read_geotiff(path)
                               : data::read_geotiff(path, data::Window{0, 0, int(width), int(height)});
    return r.data.size() == size_t(r.bands) * size_t(r.width) * size_t(r.height);
  } catch (const Error&) {
    return false;
  }
}

// The safetensors reader, then the checkpoint check on what it read (a file without the checksum
// entry, or with a wrong one, is refused there: a checkpoint reader's first step).
inline bool safetensors(const uint8_t* data, size_t size) {
  const std::string path = as_file(data, size, ".safetensors");
  SafetensorsFile file;
  try {
    file = load_safetensors(path);
  } catch (const Error&) {
    return false;
  }
  try {
    verify_checkpoint(file, path);
  } catch (const Error&) {
  }
  return true;
}

inline bool sen12mscr_list(const uint8_t* data, size_t size) {
  try {
    (void)data::read_sen12mscr_list(as_file(data, size, ".csv"));
    return true;
  } catch (const Error&) {
    return false;
  }
}

// A split file against a fixed index: 10 class folders of 3 (empty) tiles each, made once per
// process under /tmp and indexed without reading the tiles.
inline const data::EuroSat& split_index() {
  static const std::unique_ptr<data::EuroSat> index = [] {
    namespace fs = std::filesystem;
    const fs::path root = fs::path("/tmp") / ("nimbus_fuzz_eurosat_" + std::to_string(::getpid()));
    for (const std::string& c : data::eurosat_class_names()) {
      fs::create_directories(root / c);
      for (int i = 1; i <= 3; ++i) {
        FILE* f = std::fopen((root / c / (c + "_" + std::to_string(i) + ".tif")).c_str(), "wb");
        if (f) std::fclose(f);
      }
    }
    return std::make_unique<data::EuroSat>(root.string(), false);
  }();
  return *index;
}

inline bool eurosat_split(const uint8_t* data, size_t size) {
  try {
    const std::vector<size_t> idx = split_index().read_split_file(as_file(data, size, ".txt"));
    for (size_t i : idx)
      if (i >= split_index().size()) return false;  // never: an index outside the dataset would be a finding
    return true;
  } catch (const Error&) {
    return false;
  }
}

// A raster pack, its sources unchecked (they do not exist here), every entry read whole.
inline bool raster_pack(const uint8_t* data, size_t size) {
  try {
    const auto pack = data::RasterPack::open(as_file(data, size, ".pack"), false);
    for (const std::string& s : pack->sources()) {
      const data::Raster r = pack->read(s);
      if (r.data.size() != size_t(r.bands) * size_t(r.width) * size_t(r.height)) return false;
    }
    return true;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace nimbus::fuzz
