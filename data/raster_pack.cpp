// raster_pack.cpp: the packed GeoTIFF cache (see raster_pack.h): build, map, check, read windows.
// POSIX mmap and stat: nothing in Debian packs rasters for random window reads more simply than this
// (HDF5 or zarr would add a dependency and a format for one flat array per file).
#include "data/raster_pack.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <type_traits>

#include "engine/io/input_files.h"
#include "engine/io/output_path.h"
#include "engine/io/temp_files.h"
#include "kernels/common/error.h"

namespace nimbus::data {

namespace {

namespace fs = std::filesystem;
constexpr char kMagic[8] = {'N', 'I', 'M', 'B', 'U', 'S', 'R', 'P'};
// Version 2 holds uint8, uint16, int16 and float32 entries; version 3 adds int8, uint32, int32 and
// float64. A pack is written with the lowest version that holds its types, so a build that reads only
// version 2 still reads every pack it could (and calls a pack with the newer types stale, not corrupt).
constexpr uint32_t kOldestVersion = 2, kVersion = 3;
uint32_t version_for(SampleType t) {
  return t == SampleType::UInt8 || t == SampleType::UInt16 || t == SampleType::Int16 || t == SampleType::Float32
             ? 2
             : 3;
}
constexpr uint64_t kHeaderBytes = 64, kAlign = 64;
constexpr uint64_t kMaxPathBytes = 4096, kMaxSide = 1 << 20, kMaxBands = 1024, kMaxNameBytes = 1024;

size_t sample_bytes(SampleType t) {
  switch (t) {
    case SampleType::UInt8:
    case SampleType::Int8: return 1;
    case SampleType::UInt16:
    case SampleType::Int16: return 2;
    case SampleType::Float32:
    case SampleType::UInt32:
    case SampleType::Int32: return 4;
    case SampleType::Float64: return 8;
  }
  return 0;
}

// One stored sample of type T as read_geotiff's float. (memcpy: the map is only byte-aligned as far as
// the compiler knows.)
template <typename T>
float load(const unsigned char* at) {
  T v;
  std::memcpy(&v, at, sizeof(T));
  return float(v);
}
// read_geotiff's float `v` of a sample of type T, stored so that load<T> gives `v` back: a value of an
// integer file is integral and within its type, but int32 and uint32 values past 2^24 were rounded to
// float, up to one past the type's largest, hence the clamp.
template <typename T>
void store(float v, unsigned char* at) {
  T t;
  if constexpr (std::is_floating_point_v<T>)
    t = T(v);
  else
    t = T(std::clamp(double(v), double(std::numeric_limits<T>::min()), double(std::numeric_limits<T>::max())));
  std::memcpy(at, &t, sizeof(T));
}

struct SourceStat {
  bool exists = false;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
};
SourceStat stat_source(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return {true, uint64_t(st.st_size), int64_t(st.st_mtim.tv_sec) * 1000000000 + int64_t(st.st_mtim.tv_nsec)};
}

template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

// Reads the directory and header with every size checked against the mapped bytes.
struct Cursor {
  const unsigned char* p;
  uint64_t at, end;
  const std::string& file;
  template <typename T>
  T get(const char* what) {
    NIMBUS_CHECK(end - at >= sizeof(T), file, ": raster pack directory ends inside ", what, " (corrupt or truncated)");
    T v;
    std::memcpy(&v, p + at, sizeof v);
    at += sizeof v;
    return v;
  }
};

}  // namespace

std::string pack_key(const std::string& source) { return fs::absolute(fs::path(source)).lexically_normal().string(); }

std::shared_ptr<const RasterPack> RasterPack::open(const std::string& path, bool check_sources) {
  std::shared_ptr<RasterPack> pack(new RasterPack());
  pack->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  NIMBUS_CHECK(fd >= 0, path, ": cannot open the raster pack (", std::strerror(errno), ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size < 0 || uint64_t(st.st_size) < kHeaderBytes) {
    ::close(fd);
    throw Error(str(path, ": not a raster pack (shorter than its ", kHeaderBytes, "-byte header)"));
  }
  pack->file_bytes_ = uint64_t(st.st_size);
  void* m = ::mmap(nullptr, size_t(pack->file_bytes_), PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  NIMBUS_CHECK(m != MAP_FAILED, path, ": cannot map the raster pack (", std::strerror(errno), ")");
  pack->map_ = static_cast<const unsigned char*>(m);

  Cursor h{pack->map_, 0, kHeaderBytes, path};
  NIMBUS_CHECK(std::memcmp(pack->map_, kMagic, sizeof kMagic) == 0, path, ": not a raster pack (no NIMBUSRP magic)");
  h.at = sizeof kMagic;
  const uint32_t version = h.get<uint32_t>("the version");
  NIMBUS_CHECK(version >= kOldestVersion && version <= kVersion, path, ": raster pack version ", version,
               ", this build reads ", kOldestVersion, " to ", kVersion, " (rebuild it)");
  h.get<uint32_t>("the header");
  const uint64_t count = h.get<uint64_t>("the entry count"), dir_at = h.get<uint64_t>("the directory offset"),
                 dir_bytes = h.get<uint64_t>("the directory size"), total = h.get<uint64_t>("the file size");
  NIMBUS_CHECK(total == pack->file_bytes_, path, ": raster pack says it is ", total, " bytes but the file has ",
               pack->file_bytes_, " (truncated or appended to)");
  NIMBUS_CHECK(dir_at >= kHeaderBytes && dir_at <= total && dir_bytes == total - dir_at, path,
               ": raster pack directory at ", dir_at, " (", dir_bytes, " bytes) does not end the ", total,
               "-byte file");
  // Each entry takes at least 56 bytes of directory: a count beyond that is corrupt, not a reason to reserve.
  NIMBUS_CHECK(count <= dir_bytes / 56, path, ": raster pack claims ", count, " entries in a ", dir_bytes,
               "-byte directory");
  Cursor c{pack->map_, dir_at, total, path};
  pack->entries_.reserve(size_t(count));
  for (uint64_t i = 0; i < count; ++i) {
    const uint32_t n = c.get<uint32_t>("a path length");
    NIMBUS_CHECK(n > 0 && n <= kMaxPathBytes && c.end - c.at >= n, path, ": raster pack entry ", i, " has a ", n,
                 "-byte path (corrupt)");
    std::string key(reinterpret_cast<const char*>(pack->map_ + c.at), n);
    c.at += n;
    Entry e;
    e.source_size = c.get<uint64_t>("a source size");
    e.source_mtime_ns = c.get<int64_t>("a source time");
    const uint32_t bands = c.get<uint32_t>("a band count"), height = c.get<uint32_t>("a height"),
                   width = c.get<uint32_t>("a width"), type = c.get<uint32_t>("a sample type");
    e.offset = c.get<uint64_t>("a data offset");
    e.bytes = c.get<uint64_t>("a data size");
    NIMBUS_CHECK(bands > 0 && bands <= kMaxBands && height > 0 && height <= kMaxSide && width > 0 &&
                     width <= kMaxSide && type <= uint32_t(SampleType::Float64) &&
                     version_for(SampleType(type)) <= version,
                 path, ": raster pack entry ", key, ": ", bands, " bands of ", width, "x", height, ", type ", type,
                 " in a version ", version, " pack (corrupt)");
    e.bands = int(bands), e.height = int(height), e.width = int(width), e.type = SampleType(type);
    const uint64_t want = uint64_t(bands) * height * width * sample_bytes(e.type);  // < 2^62 by the limits above
    NIMBUS_CHECK(e.bytes == want && e.offset >= kHeaderBytes && e.offset % kAlign == 0 && e.offset <= dir_at &&
                     e.bytes <= dir_at - e.offset,
                 path, ": raster pack entry ", key, ": ", e.bytes, " bytes at ", e.offset, " (expected ", want,
                 " bytes, 64-aligned, before the directory at ", dir_at, ")");
    const uint32_t names = c.get<uint32_t>("a band name count");
    NIMBUS_CHECK(names == 0 || names == bands, path, ": raster pack entry ", key, ": ", names, " band names for ",
                 bands, " bands (corrupt)");
    for (uint32_t k = 0; k < names; ++k) {
      const uint32_t len = c.get<uint32_t>("a band name length");
      NIMBUS_CHECK(len <= kMaxNameBytes && c.end - c.at >= len, path, ": raster pack entry ", key, ": band name ",
                   k, " of ", len, " bytes (corrupt)");
      e.band_names.emplace_back(reinterpret_cast<const char*>(pack->map_ + c.at), len);
      c.at += len;
    }
    NIMBUS_CHECK(pack->entries_.emplace(std::move(key), e).second, path, ": raster pack lists a source twice");
  }
  NIMBUS_CHECK(c.at == total, path, ": raster pack directory has ", total - c.at, " bytes after its last entry");

  if (check_sources)
    for (const auto& [key, e] : pack->entries_) {
      const SourceStat s = stat_source(key);
      NIMBUS_CHECK(s.exists, path, ": the raster pack's source ", key, " is missing (rebuild the pack)");
      NIMBUS_CHECK(s.size == e.source_size && s.mtime_ns == e.source_mtime_ns, path, ": the raster pack's source ",
                   key, " changed since the pack was built (", e.source_size, " -> ", s.size,
                   " bytes, or a newer modification time): rebuild the pack");
    }
  return pack;
}

RasterPack::~RasterPack() {
  if (map_) ::munmap(const_cast<unsigned char*>(map_), size_t(file_bytes_));
}

bool RasterPack::contains(const std::string& source) const { return entries_.count(pack_key(source)) > 0; }

std::vector<std::string> RasterPack::sources() const {
  std::vector<std::string> out;
  for (const auto& [key, e] : entries_) out.push_back(key);
  std::sort(out.begin(), out.end());
  return out;
}

const RasterPack::Entry& RasterPack::entry(const std::string& source) const {
  const auto it = entries_.find(pack_key(source));
  NIMBUS_CHECK(it != entries_.end(), path_, ": the raster pack holds no ", source);
  return it->second;
}

TiffInfo RasterPack::info(const std::string& source) const {
  const Entry& e = entry(source);
  TiffInfo info;
  info.width = e.width, info.height = e.height, info.bands = e.bands, info.type = e.type;
  info.band_names = e.band_names;
  return info;
}

Raster RasterPack::read(const std::string& source) const {
  const Entry& e = entry(source);
  return read(source, Window{0, 0, e.width, e.height});
}

Raster RasterPack::read(const std::string& source, const Window& win) const {
  const Entry& e = entry(source);
  NIMBUS_CHECK(win.width > 0 && win.height > 0 && win.x0 >= 0 && win.y0 >= 0 && win.x0 <= e.width - win.width &&
                   win.y0 <= e.height - win.height,
               source, " (in ", path_, "): window x0=", win.x0, " y0=", win.y0, " ", win.width, "x", win.height,
               " is outside the ", e.width, "x", e.height, " image");
  Raster r;
  r.width = win.width, r.height = win.height, r.bands = e.bands, r.type = e.type;
  r.band_names = e.band_names;
  r.data.resize(size_t(e.bands) * size_t(win.height) * size_t(win.width));
  const unsigned char* base = map_ + e.offset;
  const size_t es = sample_bytes(e.type);
  float* out = r.data.data();
  for (int b = 0; b < e.bands; ++b)
    for (int y = 0; y < win.height; ++y) {
      const unsigned char* row =
          base + ((size_t(b) * size_t(e.height) + size_t(win.y0 + y)) * size_t(e.width) + size_t(win.x0)) * es;
      for (int x = 0; x < win.width; ++x, ++out) {
        const unsigned char* at = row + es * size_t(x);
        switch (e.type) {
          case SampleType::UInt8: *out = load<uint8_t>(at); break;
          case SampleType::Int8: *out = load<int8_t>(at); break;
          case SampleType::UInt16: *out = load<uint16_t>(at); break;
          case SampleType::Int16: *out = load<int16_t>(at); break;
          case SampleType::UInt32: *out = load<uint32_t>(at); break;
          case SampleType::Int32: *out = load<int32_t>(at); break;
          case SampleType::Float32: *out = load<float>(at); break;
          case SampleType::Float64: *out = load<double>(at); break;
        }
      }
    }
  return r;
}

namespace {
// The pack at `path` when it is usable as a pack of `sources`, else null and why.
std::shared_ptr<const RasterPack> usable_pack(const std::string& path, const std::vector<std::string>& sources,
                                              std::string& why) {
  if (!fs::exists(path)) {
    why = path + " does not exist";
    return nullptr;
  }
  try {
    auto pack = RasterPack::open(path, true);
    for (const std::string& s : sources)
      if (!pack->contains(s)) {
        why = str(path, " does not hold ", s);
        return nullptr;
      }
    return pack;
  } catch (const Error& e) {
    why = e.what();
    return nullptr;
  }
}
}  // namespace

std::string RasterPack::stale_reason(const std::string& path, const std::vector<std::string>& sources) {
  std::string why;
  usable_pack(path, sources, why);
  return why;
}

void build_raster_pack(const std::string& path, const std::vector<std::string>& sources,
                       const std::function<void(size_t, size_t)>& progress) {
  // Only a pack may be replaced: an existing file without the magic is someone's data (a mistyped
  // --pack naming a tile or a checkpoint); and never an input of this run.
  refuse_if_input(path);
  if (fs::exists(path)) {
    NIMBUS_CHECK(fs::is_regular_file(path), path, ": exists and is not a file; choose another raster pack path");
    char head[sizeof kMagic] = {};
    std::ifstream existing(path, std::ios::binary);
    existing.read(head, sizeof head);
    NIMBUS_CHECK(existing.gcount() == std::streamsize(sizeof head) && std::memcmp(head, kMagic, sizeof kMagic) == 0,
                 path, ": exists and is not a raster pack (no NIMBUSRP magic): refusing to replace it; remove it or "
                 "choose another path");
  }
  const std::string target = atomic_output_path(path);  // a link's file, the link kept
  const std::string tmp = target + ".tmp." + std::to_string(::getpid());
  const TempFile guard(tmp);  // removed if a signal stops the process before the rename
  std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
  NIMBUS_CHECK(f.good(), path, ": cannot create the raster pack (its temporary file ", tmp, ": ", std::strerror(errno),
               ")");
  try {
    std::string dir;
    uint64_t at = kHeaderBytes;
    f.write(std::string(kHeaderBytes, '\0').data(), std::streamsize(kHeaderBytes));
    std::set<std::string> packed;  // a file named twice (a triplet list may share one) is packed once
    uint32_t version = kOldestVersion;
    for (size_t i = 0; i < sources.size(); ++i) {
      const std::string key = pack_key(sources[i]);
      if (!packed.insert(key).second) {
        if (progress) progress(i + 1, sources.size());
        continue;
      }
      const SourceStat st = stat_source(key);  // before reading: a change while it is read makes the pack stale
      NIMBUS_CHECK(st.exists, sources[i], ": cannot pack a missing file");
      const Raster r = read_geotiff(sources[i]);
      const size_t es = sample_bytes(r.type), n = r.data.size();
      std::string bytes(n * es, '\0');
      for (size_t k = 0; k < n; ++k) {  // what read_geotiff read, back exactly (store's comment)
        const float v = r.data[k];
        unsigned char* at = reinterpret_cast<unsigned char*>(&bytes[es * k]);
        switch (r.type) {
          case SampleType::UInt8: store<uint8_t>(v, at); break;
          case SampleType::Int8: store<int8_t>(v, at); break;
          case SampleType::UInt16: store<uint16_t>(v, at); break;
          case SampleType::Int16: store<int16_t>(v, at); break;
          case SampleType::UInt32: store<uint32_t>(v, at); break;
          case SampleType::Int32: store<int32_t>(v, at); break;
          case SampleType::Float32: store<float>(v, at); break;
          case SampleType::Float64: store<double>(v, at); break;
        }
      }
      const uint64_t pad = (kAlign - at % kAlign) % kAlign;
      f.write(std::string(pad, '\0').data(), std::streamsize(pad));
      at += pad;
      f.write(bytes.data(), std::streamsize(bytes.size()));
      put<uint32_t>(dir, uint32_t(key.size()));
      dir += key;
      put<uint64_t>(dir, st.size);
      put<int64_t>(dir, st.mtime_ns);
      put<uint32_t>(dir, uint32_t(r.bands));
      put<uint32_t>(dir, uint32_t(r.height));
      put<uint32_t>(dir, uint32_t(r.width));
      put<uint32_t>(dir, uint32_t(r.type));
      version = std::max(version, version_for(r.type));
      put<uint64_t>(dir, at);
      put<uint64_t>(dir, uint64_t(bytes.size()));
      NIMBUS_CHECK(r.band_names.empty() || r.band_names.size() == size_t(r.bands), sources[i], ": ",
                   r.band_names.size(), " band names for ", r.bands, " bands");
      put<uint32_t>(dir, uint32_t(r.band_names.size()));
      for (const std::string& name : r.band_names) {
        NIMBUS_CHECK(name.size() <= kMaxNameBytes, sources[i], ": a band name of ", name.size(), " bytes");
        put<uint32_t>(dir, uint32_t(name.size()));
        dir += name;
      }
      at += bytes.size();
      if (progress) progress(i + 1, sources.size());
    }
    const uint64_t dir_at = at, total = at + dir.size();
    f.write(dir.data(), std::streamsize(dir.size()));
    std::string head(kMagic, sizeof kMagic);
    put<uint32_t>(head, version);
    put<uint32_t>(head, 0);
    put<uint64_t>(head, uint64_t(packed.size()));
    put<uint64_t>(head, dir_at);
    put<uint64_t>(head, uint64_t(dir.size()));
    put<uint64_t>(head, total);
    head.resize(kHeaderBytes, '\0');
    f.seekp(0);
    f.write(head.data(), std::streamsize(head.size()));
    f.close();
    if (!f) {
      fs::remove(tmp);
      throw Error(str(path, ": writing the raster pack failed (disk full?) (its temporary file ", tmp, ")"));
    }
  } catch (...) {
    f.close();
    fs::remove(tmp);
    throw;
  }
  std::error_code ec;
  keep_target_mode(tmp, target);
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove(tmp);
    throw Error(str(path, ": cannot rename the finished raster pack into place: ", ec.message()));
  }
}

std::shared_ptr<const RasterPack> ensure_raster_pack(const std::string& path, const std::vector<std::string>& sources,
                                                     const std::function<void(const std::string&)>& log,
                                                     const std::function<void(size_t, size_t)>& progress) {
  std::string why;
  if (auto pack = usable_pack(path, sources, why)) return pack;  // opened and checked once
  if (log) log(str("building the raster pack ", path, " from ", sources.size(), " files: ", why));
  build_raster_pack(path, sources, progress);
  return RasterPack::open(path, true);
}

TiffInfo read_info_via(const RasterPack* pack, const std::string& path) {
  return pack && pack->contains(path) ? pack->info(path) : read_tiff_info(path);
}

Raster read_window_via(const RasterPack* pack, const std::string& path, const Window& window) {
  return pack && pack->contains(path) ? pack->read(path, window) : read_geotiff(path, window);
}

}  // namespace nimbus::data
