// raster_pack.h: a packed, memory-mapped cache of decoded GeoTIFFs for the training loaders.
//
// Why: a training sample is one to three GeoTIFFs (EuroSAT tile; SEN12MS-CR's S1, S2 and cloudy S2).
// Reading one means opening the file, parsing its directory and decoding strips, a few milliseconds
// of CPU per sample: bench_loader measures the loader's rate, and a GPU step takes far less per
// sample than that. A pack holds the pixels of many files in their own sample type, back to back,
// with a directory. A read is a copy out of a memory-mapped file (the page cache), no decoding.
//
// A pack is built once from the files (build_raster_pack: read with read_geotiff, stored so that a read
// gives read_geotiff's values back exactly)
// and records each source's size and modification time. open() refuses a pack whose sources changed
// or went missing, naming the first one; ensure_raster_pack() builds a pack that is missing or
// stale. Everything read from a pack file is checked before it is used (sizes, offsets, counts),
// so a truncated or corrupt pack is an Error naming the file, never a crash.
//
// File layout, little-endian:
//   [0, 64)  header: "NIMBUSRP", u32 version (2 or 3, below), u32 0, u64 entries, u64 directory offset,
//            u64 directory bytes, u64 file bytes, 16 bytes 0
//   data     each entry's pixels, band-major (bands, height, width) in its sample type, each entry
//            starting on a 64-byte boundary
//   directory, per entry: u32 path bytes, the path (absolute, as the loader names the source),
//            u64 source size, i64 source mtime (ns), u32 bands, u32 height, u32 width,
//            u32 sample type (geotiff.h's SampleType), u64 data offset, u64 data bytes,
//            u32 band names (0, or one per band), each u32 bytes + the name (the GDAL band
//            descriptions: the trainers check the band order they declare, data/sentinel2.h)
// Georeferencing is not kept: the loaders need pixels and band names only. Version 1 had no names;
// version 2 holds uint8, uint16, int16 and float32 entries, version 3 also int8, uint32, int32 and
// float64. A pack is written as version 2 unless an entry needs 3, so a build that reads version 2
// only still reads it; a pack of a version this build does not read is stale (ensure_raster_pack
// rebuilds it).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "data/geotiff.h"

namespace nimbus::data {

class RasterPack {
 public:
  // Maps the pack read-only. check_sources: also stat every source and refuse a changed one.
  static std::shared_ptr<const RasterPack> open(const std::string& path, bool check_sources = true);
  ~RasterPack();
  RasterPack(const RasterPack&) = delete;
  RasterPack& operator=(const RasterPack&) = delete;

  const std::string& path() const { return path_; }
  size_t size() const { return entries_.size(); }
  uint64_t bytes() const { return file_bytes_; }
  bool contains(const std::string& source) const;
  std::vector<std::string> sources() const;  // the keys it files its entries under (pack_key), sorted
  // As read_tiff_info(source) for width, height, bands, type and band names (the rest default). Error if absent.
  TiffInfo info(const std::string& source) const;
  // As read_geotiff(source, window): float32 band-major, the same values; no georeferencing.
  Raster read(const std::string& source, const Window& window) const;
  Raster read(const std::string& source) const;

  // Why `path` cannot be used as a pack of `sources` now ("" when it can): missing, unreadable,
  // corrupt, a source not in it, or a source changed since it was built.
  static std::string stale_reason(const std::string& path, const std::vector<std::string>& sources);

 private:
  struct Entry {
    uint64_t source_size = 0;
    int64_t source_mtime_ns = 0;
    int bands = 0, height = 0, width = 0;
    SampleType type = SampleType::UInt16;
    uint64_t offset = 0, bytes = 0;
    std::vector<std::string> band_names;
  };
  RasterPack() = default;
  const Entry& entry(const std::string& source) const;
  std::string path_;
  const unsigned char* map_ = nullptr;
  uint64_t file_bytes_ = 0;
  std::unordered_map<std::string, Entry> entries_;
};

// The key a pack files a source under: its absolute, lexically normal path.
std::string pack_key(const std::string& source);

// Writes a pack of `sources` (each read with read_geotiff; a file named twice is packed once) to
// `path`: a temporary file renamed into place. progress(done, total) after each source, when given. Error naming the source that fails.
void build_raster_pack(const std::string& path, const std::vector<std::string>& sources,
                       const std::function<void(size_t, size_t)>& progress = {});
// open(path), after building it first when it is missing or stale (why goes to `log` when given).
std::shared_ptr<const RasterPack> ensure_raster_pack(const std::string& path, const std::vector<std::string>& sources,
                                                     const std::function<void(const std::string&)>& log = {},
                                                     const std::function<void(size_t, size_t)>& progress = {});

// What the loaders call: from the pack when it holds `path`, else from the file itself.
TiffInfo read_info_via(const RasterPack* pack, const std::string& path);
Raster read_window_via(const RasterPack* pack, const std::string& path, const Window& window);

}  // namespace nimbus::data
