// geotiff.cpp: GeoTIFF reading and writing on top of libtiff.
//
// Files are opened with libtiff's TIFFOpenExt after libgeotiff's
// XTIFFInitialize() has registered the GeoTIFF tags (exactly what XTIFFOpen
// does), because TIFFOpenExt lets every handle carry its own error handler:
// libtiff's messages land in the nimbus::Error for that file instead of on
// stderr, and loader threads never share a global handler.
//
// Pixels move block by block (a strip or a tile, one band of it when the file
// is band-interleaved): a read decodes only the blocks its window touches and
// scatters them into the band-major (C, H, W) float buffer. A block the file does not store (GDAL's
// sparse files) is filled with what GDAL reads there, the nodata value or 0.
#include "data/geotiff.h"

#include <tiffio.h>
#include <unistd.h>
#include <xtiffio.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cctype>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <deque>
#include <new>
#include <filesystem>
#include <limits>
#include <mutex>
#include <optional>
#include <tuple>

#include "engine/io/input_files.h"
#include "engine/io/output_path.h"
#include "engine/io/temp_files.h"
#include "kernels/common/error.h"

namespace nimbus::data {

namespace {

// Every sample type: its name, and its TIFF BitsPerSample and SampleFormat.
struct SampleLayout {
  SampleType type;
  const char* name;
  uint16_t bits, format;
};
constexpr SampleLayout kSampleTypes[] = {
    {SampleType::UInt8, "uint8", 8, SAMPLEFORMAT_UINT},       {SampleType::Int8, "int8", 8, SAMPLEFORMAT_INT},
    {SampleType::UInt16, "uint16", 16, SAMPLEFORMAT_UINT},    {SampleType::Int16, "int16", 16, SAMPLEFORMAT_INT},
    {SampleType::UInt32, "uint32", 32, SAMPLEFORMAT_UINT},    {SampleType::Int32, "int32", 32, SAMPLEFORMAT_INT},
    {SampleType::Float32, "float32", 32, SAMPLEFORMAT_IEEEFP}, {SampleType::Float64, "float64", 64, SAMPLEFORMAT_IEEEFP}};

const SampleLayout& layout_of(SampleType t) {
  for (const SampleLayout& l : kSampleTypes)
    if (l.type == t) return l;
  throw Error(str("geotiff: sample type ", int(t), " is not one"));
}

int bytes_of(SampleType t) { return layout_of(t).bits / 8; }

}  // namespace

const char* sample_type_name(SampleType t) { return layout_of(t).name; }
bool is_floating(SampleType t) { return layout_of(t).format == SAMPLEFORMAT_IEEEFP; }

namespace {

// Classic TIFF addresses 4 GiB: an image whose blocks take more than 3.75 GiB uncompressed (the rest
// for its tags and offsets; deflate rarely grows data), tiles padded to whole tiles, is written as
// BigTIFF (GDAL's BIGTIFF=IF_NEEDED, with a margin). Decided when the file is opened, before any pixel
// is written; the "w" or "w8" of TIFFOpen.
const char* write_mode(int width, int height, int bands, const WriteOptions& opt) {
  uint64_t w = uint64_t(width), h = uint64_t(height);
  if (opt.tiled) {
    const uint64_t t = uint64_t(opt.tile_size);
    w = (w + t - 1) / t * t, h = (h + t - 1) / t * t;
  }
  return w * h * uint64_t(bands) * uint64_t(bytes_of(opt.type)) > (uint64_t(15) << 28) ? "w8" : "w";
}

// The memory this process may use, in bytes (0 when unknown): the machine's, or its control group's
// limit when lower (a container's; cgroup v2, then v1). A read needing more fails before allocating.
// Read once: the training loaders read a window a sample.
uint64_t read_memory_limit() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  uint64_t limit = pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : 0;
  for (const char* file : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    std::FILE* f = std::fopen(file, "r");
    if (!f) continue;
    unsigned long long v = 0;
    const bool number = std::fscanf(f, "%llu", &v) == 1;  // "max": no limit
    std::fclose(f);
    if (number && v > 0 && (limit == 0 || v < limit)) limit = v;
  }
  return limit;
}
uint64_t memory_limit() {
  static const uint64_t limit = read_memory_limit();
  return limit;
}

std::string gib(uint64_t bytes) {  // "3.5 GiB", or "12.0 MiB" below a GiB
  char b[32];
  const bool large = bytes >= (uint64_t(1) << 30);
  std::snprintf(b, sizeof b, "%.1f %s", double(bytes) / double(uint64_t(1) << (large ? 30 : 20)), large ? "GiB" : "MiB");
  return b;
}

// f(T()) with T the C++ type of one sample of type t, so one template serves every type.
template <typename F>
void with_sample_type(SampleType t, F&& f) {
  switch (t) {
    case SampleType::UInt8: return f(uint8_t());
    case SampleType::UInt16: return f(uint16_t());
    case SampleType::Int16: return f(int16_t());
    case SampleType::Float32: return f(float());
    case SampleType::Int8: return f(int8_t());
    case SampleType::UInt32: return f(uint32_t());
    case SampleType::Int32: return f(int32_t());
    case SampleType::Float64: return f(double());
  }
}

// ---- libtiff handle with its own error capture ----

int on_error(TIFF*, void* user, const char* module, const char* fmt, va_list ap) {
  auto* msg = static_cast<std::string*>(user);
  if (msg->empty()) {  // the first error is the cause; later ones are consequences
    char buf[512];
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    *msg = buf;
  }
  return 1;  // handled: libtiff prints nothing
}
int on_warning(TIFF*, void*, const char*, const char*, va_list) { return 1; }  // e.g. unknown private tags

// GDAL's metadata tag (band descriptions) registered as a plain ASCII tag, after the GeoTIFF tags
// that XTIFFInitialize's extender adds (which we chain to). Unregistered, libtiff would read it as
// an anonymous tag and refuse to write it.
TIFFExtendProc g_parent_extender = nullptr;
void gdal_tag_extender(TIFF* tif) {
  static const TIFFFieldInfo info[] = {
      {TIFFTAG_GDAL_METADATA, TIFF_VARIABLE, TIFF_VARIABLE, TIFF_ASCII, FIELD_CUSTOM, 1, 0, const_cast<char*>("GDALMetadata")},
      {TIFFTAG_GDAL_NODATA, TIFF_VARIABLE, TIFF_VARIABLE, TIFF_ASCII, FIELD_CUSTOM, 1, 0, const_cast<char*>("GDALNoDataValue")}};
  TIFFMergeFieldInfo(tif, info, 2);
  if (g_parent_extender) g_parent_extender(tif);
}
void register_tags() {
  XTIFFInitialize();
  g_parent_extender = TIFFSetTagExtender(gdal_tag_extender);
}

class TiffFile {
 public:
  TiffFile(const std::string& path, const char* mode) : path_(path) {
    static std::once_flag once;
    std::call_once(once, register_tags);
    TIFFOpenOptions* opts = TIFFOpenOptionsAlloc();
    TIFFOpenOptionsSetErrorHandlerExtR(opts, on_error, &error_);
    TIFFOpenOptionsSetWarningHandlerExtR(opts, on_warning, nullptr);
    tif_ = TIFFOpenExt(path.c_str(), mode, opts);
    TIFFOpenOptionsFree(opts);
    if (!tif_) fail(mode[0] == 'r' ? "cannot open as a TIFF" : "cannot create");
    if (mode[0] == 'r') note_input(path);  // no output of this run may replace it (input_files.h)
  }
  ~TiffFile() {
    if (tif_) TIFFClose(tif_);
  }
  TiffFile(const TiffFile&) = delete;
  TiffFile& operator=(const TiffFile&) = delete;

  TIFF* get() const { return tif_; }
  // Closes (flushing a written file); a failure throws.
  void close() {
    bool ok = TIFFFlush(tif_) == 1;
    TIFFClose(tif_);
    tif_ = nullptr;
    if (!ok) fail("cannot finish writing");
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(str("geotiff: ", path_, ": ", what, error_.empty() ? "" : " (libtiff: " + error_ + ")"));
  }

 private:
  std::string path_;
  std::string error_;
  TIFF* tif_ = nullptr;
};

// ---- tags ----

const char* sample_format_name(uint16_t f) {
  switch (f) {
    case SAMPLEFORMAT_UINT: return "unsigned integer";
    case SAMPLEFORMAT_INT: return "signed integer";
    case SAMPLEFORMAT_IEEEFP: return "float";
    case SAMPLEFORMAT_VOID: return "untyped";
    case SAMPLEFORMAT_COMPLEXINT: return "complex integer";
    case SAMPLEFORMAT_COMPLEXIEEEFP: return "complex float";
  }
  return "unknown-format";
}

GeoInfo read_geo(TIFF* tif) {
  GeoInfo g;
  auto doubles = [&](ttag_t tag, std::vector<double>& out) {
    uint16_t n = 0;
    double* v = nullptr;
    if (TIFFGetField(tif, tag, &n, &v) && v) out.assign(v, v + n);
  };
  doubles(TIFFTAG_GEOPIXELSCALE, g.pixel_scale);
  doubles(TIFFTAG_GEOTIEPOINTS, g.tiepoints);
  doubles(TIFFTAG_GEOTRANSMATRIX, g.transformation);
  doubles(TIFFTAG_GEODOUBLEPARAMS, g.geo_double_params);
  uint16_t n = 0;
  uint16_t* keys = nullptr;
  if (TIFFGetField(tif, TIFFTAG_GEOKEYDIRECTORY, &n, &keys) && keys) g.geokeys.assign(keys, keys + n);
  char* ascii = nullptr;
  if (TIFFGetField(tif, TIFFTAG_GEOASCIIPARAMS, &ascii) && ascii) g.geo_ascii_params = ascii;
  return g;
}

void write_geo(TIFF* tif, const GeoInfo& g) {
  auto doubles = [&](ttag_t tag, const std::vector<double>& v) {
    if (!v.empty()) TIFFSetField(tif, tag, int(v.size()), v.data());
  };
  doubles(TIFFTAG_GEOPIXELSCALE, g.pixel_scale);
  doubles(TIFFTAG_GEOTIEPOINTS, g.tiepoints);
  doubles(TIFFTAG_GEOTRANSMATRIX, g.transformation);
  doubles(TIFFTAG_GEODOUBLEPARAMS, g.geo_double_params);
  if (!g.geokeys.empty()) TIFFSetField(tif, TIFFTAG_GEOKEYDIRECTORY, int(g.geokeys.size()), g.geokeys.data());
  if (!g.geo_ascii_params.empty()) TIFFSetField(tif, TIFFTAG_GEOASCIIPARAMS, g.geo_ascii_params.c_str());
}

// GDAL keeps band descriptions in its metadata tag as XML items,
//   <GDALMetadata><Item name="DESCRIPTION" sample="0" role="description">B1</Item>...</GDALMetadata>
// (sample counts from 0). Only those items are read; other metadata is ignored. Hand-parsed: the
// tag is a flat list of one element type, and a malformed one only loses the descriptions, so an
// XML library would add a dependency for little.
std::string xml_unescape(const std::string& t) {
  static const std::pair<const char*, char> entities[] = {
      {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
  std::string out;
  for (size_t i = 0; i < t.size();) {
    bool done = false;
    for (const auto& [e, c] : entities)
      if (t.compare(i, std::strlen(e), e) == 0) {
        out += c, i += std::strlen(e), done = true;
        break;
      }
    if (!done) out += t[i++];
  }
  return out;
}

std::string xml_escape(const std::string& t) {
  std::string out;
  for (char c : t) out += c == '&' ? "&amp;" : c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '"' ? "&quot;" : std::string(1, c);
  return out;
}

std::vector<std::string> read_band_names(TIFF* tif, int bands) {
  char* xml = nullptr;  // registered by gdal_tag_extender as plain ASCII
  if (!TIFFGetField(tif, TIFFTAG_GDAL_METADATA, &xml) || !xml) return {};
  const std::string m(xml);
  std::vector<std::string> names(static_cast<size_t>(bands));
  bool any = false;
  for (size_t at = m.find("<Item"); at != std::string::npos; at = m.find("<Item", at + 5)) {
    const size_t head_end = m.find('>', at), close = m.find("</Item>", at);
    if (head_end == std::string::npos || close == std::string::npos || close < head_end) break;
    const std::string head = m.substr(at, head_end - at);
    if (head.find("role=\"description\"") == std::string::npos) continue;
    const size_t sp = head.find("sample=\"");
    if (sp == std::string::npos) continue;
    char* end = nullptr;
    const long k = std::strtol(head.c_str() + sp + 8, &end, 10);
    if (end == head.c_str() + sp + 8 || *end != '"' || k < 0 || k >= bands) continue;
    names[size_t(k)] = xml_unescape(m.substr(head_end + 1, close - head_end - 1));
    any = true;
  }
  return any ? names : std::vector<std::string>{};
}

// GDAL's nodata value (tag 42113): one number as ASCII for every band ("0", "-9999", "nan").
std::optional<double> read_nodata(const TiffFile& f) {
  char* text = nullptr;
  if (!TIFFGetField(f.get(), TIFFTAG_GDAL_NODATA, &text) || !text) return std::nullopt;
  std::string t(text);
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
  char* end = nullptr;
  const double v = std::strtod(t.c_str(), &end);
  if (t.empty() || end != t.c_str() + t.size()) f.fail(str("GDAL nodata tag '", t, "' is not a number"));
  return v;
}

void write_nodata(TIFF* tif, std::optional<double> nodata) {
  if (!nodata) return;
  // %.17g keeps a float32 value exact; GDAL writes "nan" for NaN, as printf does.
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", *nodata);
  TIFFSetField(tif, TIFFTAG_GDAL_NODATA, buf);
}

void write_band_names(TIFF* tif, const std::vector<std::string>& names) {
  if (names.empty()) return;
  std::string xml = "<GDALMetadata>\n";
  for (size_t k = 0; k < names.size(); ++k)
    if (!names[k].empty())
      xml += str("  <Item name=\"DESCRIPTION\" sample=\"", k, "\" role=\"description\">", xml_escape(names[k]),
                 "</Item>\n");
  xml += "</GDALMetadata>";
  TIFFSetField(tif, TIFFTAG_GDAL_METADATA, xml.c_str());
}

// The georeferencing of the sub-image starting at pixel (x0, y0): a single
// tie point with a pixel scale moves its model point, a transformation moves
// its translation, and a set of control points moves their raster positions.
GeoInfo shift_geo(GeoInfo g, int x0, int y0) {
  if (x0 == 0 && y0 == 0) return g;
  if (g.transformation.size() == 16) {
    auto& m = g.transformation;  // row-major 4x4: X = m0*i + m1*j + m3, Y = m4*i + m5*j + m7
    m[3] += m[0] * x0 + m[1] * y0;
    m[7] += m[4] * x0 + m[5] * y0;
  }
  if (g.tiepoints.size() == 6 && g.pixel_scale.size() >= 2) {
    g.tiepoints[3] += x0 * g.pixel_scale[0];
    g.tiepoints[4] -= y0 * g.pixel_scale[1];  // rows go south
  } else {
    for (size_t k = 0; k + 5 < g.tiepoints.size(); k += 6) {
      g.tiepoints[k] -= x0;
      g.tiepoints[k + 1] -= y0;
    }
  }
  return g;
}

}  // namespace

GeoInfo coarsened_geo(GeoInfo g, int factor) {
  NIMBUS_CHECK(factor >= 1, "coarsened_geo: factor ", factor, " must be >= 1");
  if (factor == 1 || !g.present()) return g;
  const double f = double(factor);
  // GTRasterTypeGeoKey (1025): 2 = PixelIsPoint, the model points at pixel centres; else PixelIsArea.
  bool point = false;
  for (size_t k = 4; k + 3 < g.geokeys.size(); k += 4)
    if (g.geokeys[k] == 1025 && g.geokeys[k + 1] == 0) point = g.geokeys[k + 3] == 2;
  // A raster position i of the fine grid is position i / f of the coarse one (area: corners); for
  // points, the coarse pixel u's centre is the fine grid's (u + 0.5) f - 0.5.
  const auto coarse = [&](double i) { return point ? (i + 0.5) / f - 0.5 : i / f; };
  if (g.transformation.size() == 16) {
    auto& m = g.transformation;  // X = m0*i + m1*j + m3, Y = m4*i + m5*j + m7 in the fine grid's (i, j)
    const double di = point ? 0.5 * (f - 1) : 0.0;  // the fine position of coarse (0, 0)
    m[3] += (m[0] + m[1]) * di;
    m[7] += (m[4] + m[5]) * di;
    for (int k : {0, 1, 4, 5}) m[size_t(k)] *= f;
  }
  for (size_t k = 0; k + 5 < g.tiepoints.size(); k += 6) {
    g.tiepoints[k] = coarse(g.tiepoints[k]);
    g.tiepoints[k + 1] = coarse(g.tiepoints[k + 1]);
  }
  if (g.pixel_scale.size() >= 2) g.pixel_scale[0] *= f, g.pixel_scale[1] *= f;
  return g;
}

namespace {

TiffInfo info_of(const TiffFile& f) {
  TIFF* tif = f.get();
  TiffInfo info;
  uint32_t w = 0, h = 0;
  uint16_t spp = 1, bps = 1, fmt = SAMPLEFORMAT_UINT, planar = PLANARCONFIG_CONTIG, comp = 1, photo = 0;
  if (!TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &w) || !TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &h))
    f.fail("no image width/length tag");
  TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLESPERPIXEL, &spp);
  TIFFGetFieldDefaulted(tif, TIFFTAG_BITSPERSAMPLE, &bps);
  TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLEFORMAT, &fmt);
  TIFFGetFieldDefaulted(tif, TIFFTAG_PLANARCONFIG, &planar);
  TIFFGetFieldDefaulted(tif, TIFFTAG_COMPRESSION, &comp);
  TIFFGetField(tif, TIFFTAG_PHOTOMETRIC, &photo);
  if (w == 0 || h == 0 || spp == 0) f.fail(str("empty image (", w, "x", h, "x", spp, ")"));
  if (w > uint32_t(kMaxTiffSide) || h > uint32_t(kMaxTiffSide))
    f.fail(str("image of ", w, "x", h, " pixels: sides up to ", kMaxTiffSide, " are supported"));
  // 2^56 values at most, so that no byte count of the image or of a window of it wraps in 64 bits
  // (2^56 float32 values are 256 PiB: no real image comes near).
  if (uint64_t(w) * h > (uint64_t(1) << 56) / spp)
    f.fail(str("image of ", w, "x", h, "x", spp, " values: more than 2^56"));
  const SampleLayout* layout = nullptr;
  std::string supported;
  for (const SampleLayout& l : kSampleTypes) {
    if (l.bits == bps && l.format == fmt) layout = &l;
    supported += str(supported.empty() ? "" : ", ", l.name);
  }
  if (!layout)
    f.fail(str("unsupported sample type: ", bps, "-bit ", sample_format_name(fmt), " (supported: ", supported, ")"));
  info.type = layout->type;
  if (photo == PHOTOMETRIC_YCBCR || photo == PHOTOMETRIC_PALETTE)
    f.fail(str("unsupported photometric interpretation ", photo, " (YCbCr/palette)"));
  if (!TIFFIsCODECConfigured(comp)) f.fail(str("compression ", comp, " is not supported by this libtiff"));
  info.width = int(w);
  info.height = int(h);
  info.bands = spp;
  info.tiled = TIFFIsTiled(tif);
  uint32_t block_rows = 0;  // checked where a read uses it (blocks_of)
  if (info.tiled) TIFFGetField(tif, TIFFTAG_TILELENGTH, &block_rows);
  else TIFFGetFieldDefaulted(tif, TIFFTAG_ROWSPERSTRIP, &block_rows);
  info.block_rows = int(std::clamp<uint32_t>(block_rows, 1, std::max<uint32_t>(h, 1)));
  info.planar_separate = planar == PLANARCONFIG_SEPARATE;
  info.compression = comp;
  uint16_t predictor = 1;  // a codec's own tag: asked only where a codec that has it is set
  bool has_predictor = comp == COMPRESSION_ADOBE_DEFLATE || comp == COMPRESSION_DEFLATE || comp == COMPRESSION_LZW;
#ifdef COMPRESSION_ZSTD
  has_predictor |= comp == COMPRESSION_ZSTD;
#endif
#ifdef COMPRESSION_LZMA
  has_predictor |= comp == COMPRESSION_LZMA;
#endif
  if (has_predictor) TIFFGetFieldDefaulted(tif, TIFFTAG_PREDICTOR, &predictor);
  info.predictor = predictor;
  info.geo = read_geo(tif);
  info.band_names = read_band_names(tif, info.bands);
  info.nodata = read_nodata(f);
  return info;
}

// Block geometry: a strip is a full-width block of rows_per_strip rows.
struct Blocks {
  int bw = 0, bh = 0;  // block width and height in pixels
};

Blocks blocks_of(const TiffFile& f, const TiffInfo& info) {
  Blocks b;
  if (info.tiled) {
    uint32_t tw = 0, th = 0;
    if (!TIFFGetField(f.get(), TIFFTAG_TILEWIDTH, &tw) || !TIFFGetField(f.get(), TIFFTAG_TILELENGTH, &th) || tw == 0 ||
        th == 0)
      f.fail("tiled image without a valid tile size");
    // A tile larger than the image, past its next multiple of 16 (TIFF's tile granule) and the
    // 1024 pixels real writers use, only makes the reader allocate what the file does not hold.
    auto cap = [](int image) { return std::max<uint32_t>(1024, (uint32_t(image) + 15) / 16 * 16); };
    if (tw > cap(info.width) || th > cap(info.height))
      f.fail(str("tile size ", tw, "x", th, " is larger than the ", info.width, "x", info.height,
                 " image can use (corrupt header?)"));
    b.bw = int(tw);
    b.bh = int(th);
  } else {
    uint32_t rps = 0;
    TIFFGetFieldDefaulted(f.get(), TIFFTAG_ROWSPERSTRIP, &rps);
    b.bw = info.width;
    b.bh = int(std::min<uint32_t>(rps == 0 ? 1 : rps, uint32_t(info.height)));
  }
  return b;
}

// What the file's directory itself says about its blocks, read from it rather than from libtiff,
// which changes both: it pads a byte-count list shorter than the blocks with zeros (which would read
// as sparse blocks), and it cuts an uncompressed image stored as one strip into strips of a few rows.
struct DirectoryBlocks {
  std::optional<uint64_t> byte_counts;  // entries of StripByteCounts or TileByteCounts; none: absent
  uint64_t rows_per_strip = 0xFFFFFFFF; // RowsPerStrip (the TIFF default when absent)
  bool read = false;                    // false: the directory could not be read (libtiff did)
};
DirectoryBlocks directory_blocks(TIFF* tif) {
  DirectoryBlocks out;
  const int fd = TIFFFileno(tif);
  const bool big = TIFFIsBigTIFF(tif), big_endian = TIFFIsBigEndian(tif);
  const uint64_t dir = TIFFCurrentDirOffset(tif);
  auto get = [&](const unsigned char* p, int bytes) {  // an unsigned integer in the file's byte order
    uint64_t v = 0;
    for (int k = 0; k < bytes; ++k) v |= uint64_t(p[big_endian ? bytes - 1 - k : k]) << (8 * k);
    return v;
  };
  unsigned char head[8];
  const int count_bytes = big ? 8 : 2, entry_bytes = big ? 20 : 12;
  if (pread(fd, head, size_t(count_bytes), off_t(dir)) != count_bytes) return out;
  const uint64_t entries = get(head, count_bytes);
  if (entries == 0 || entries > 65535) return out;  // libtiff has read this directory already
  std::vector<unsigned char> d(size_t(entries) * entry_bytes);
  if (pread(fd, d.data(), d.size(), off_t(dir + uint64_t(count_bytes))) != ssize_t(d.size())) return out;
  out.read = true;
  for (uint64_t e = 0; e < entries; ++e) {
    const unsigned char* p = d.data() + e * entry_bytes;
    const uint64_t tag = get(p, 2), type = get(p + 2, 2), count = get(p + 4, big ? 8 : 4);
    const unsigned char* value = p + (big ? 12 : 8);  // a single value lies in the entry itself
    if ((tag == TIFFTAG_STRIPBYTECOUNTS || tag == TIFFTAG_TILEBYTECOUNTS) && !out.byte_counts) out.byte_counts = count;
    if (tag == TIFFTAG_ROWSPERSTRIP && count == 1 && (type == TIFF_SHORT || type == TIFF_LONG || (big && type == TIFF_LONG8)))
      out.rows_per_strip = get(value, type == TIFF_SHORT ? 2 : type == TIFF_LONG ? 4 : 8);
  }
  return out;
}

template <typename T>
void scatter(const unsigned char* src, int bw, int spp_blk, int band0, int nbands_blk, int bx0, int by0, int r0, int r1,
             int c0, int c1, const Window& win, Raster& out) {
  const T* s = reinterpret_cast<const T*>(src);
  for (int r = r0; r < r1; ++r)
    for (int c = c0; c < c1; ++c) {
      const T* px = s + (size_t(r - by0) * bw + (c - bx0)) * spp_blk;
      for (int k = 0; k < nbands_blk; ++k)
        out.band(band0 + k)[size_t(r - win.y0) * win.width + (c - win.x0)] = float(px[k]);
    }
}

// A block the file does not store (GDAL's SPARSE_OK=TRUE omits blocks that are all nodata, or all 0
// without a nodata value): offset and byte count 0. GDAL and rasterio read its pixels as the nodata
// value, or 0; libtiff would fail to decode it. (A byte count of 0 at an offset is a truncated block:
// libtiff gives one to a strip past the end of a file it estimates or cuts the strips of.)
bool is_sparse(TIFF* tif, uint32_t block) {
  return TIFFGetStrileByteCount(tif, block) == 0 && TIFFGetStrileOffset(tif, block) == 0;
}

// What every pixel of a sparse block reads as: the file's nodata value in its type (rounded and
// clamped to an integer type, as GDAL converts it; NaN there is 0), else 0.
float sparse_value(SampleType type, std::optional<double> nodata) {
  if (!nodata) return 0.f;
  float v = 0.f;
  with_sample_type(type, [&](auto sample) {
    using T = decltype(sample);
    if constexpr (std::is_floating_point_v<T>)
      v = float(*nodata);
    else if (!std::isnan(*nodata))
      v = float(T(std::clamp(std::round(*nodata), double(std::numeric_limits<T>::min()),
                             double(std::numeric_limits<T>::max()))));
  });
  return v;
}

// Strips of more bytes than this are decoded a row at a time (RowDecoder), not whole into a buffer.
constexpr tmsize_t kRowStripBytes = tmsize_t(32) << 20;

// A raster for `win` of the file `info` describes, without its pixels: its size, the file's type, band
// names and nodata value, and the georeferencing moved to the window's corner.
Raster window_raster(const TiffInfo& info, const Window& win) {
  Raster out;
  out.width = win.width;
  out.height = win.height;
  out.bands = info.bands;
  out.type = info.type;
  out.geo = shift_geo(info.geo, win.x0, win.y0);
  out.band_names = info.band_names;
  out.nodata = info.nodata;
  return out;
}

// Refuses a directory that lists fewer byte counts than its own geometry needs (see directory_blocks).
void check_listed_blocks(const TiffFile& f, const TiffInfo& info) {
  TIFF* tif = f.get();
  const DirectoryBlocks d = directory_blocks(tif);
  if (!d.read || !d.byte_counts) return;
  // The blocks the directory's own geometry needs: libtiff's tiles, or strips of its RowsPerStrip
  // (libtiff's count is of the strips it cut a single uncompressed one into).
  const uint64_t rows = std::clamp<uint64_t>(d.rows_per_strip, 1, uint64_t(info.height));
  const uint64_t blocks = info.tiled ? TIFFNumberOfTiles(tif)
                                     : (uint64_t(info.height) + rows - 1) / rows *
                                           uint64_t(info.planar_separate ? info.bands : 1);
  if (*d.byte_counts < blocks)
    f.fail(str("the ", info.width, "x", info.height, "x", info.bands, " header needs ", blocks, " ",
               info.tiled ? "tile" : "strip", "s but the file lists the byte counts of ", *d.byte_counts,
               " (truncated or corrupt)"));
}

// Whether windows of this file are decoded a row at a time (RowDecoder): strips of more than `above`
// bytes, which a window's read would otherwise decode whole (a whole image stored as one strip,
// tifffile's and some exporters' default; or one strip a band). libtiff itself cuts an uncompressed
// pixel-interleaved single strip into strips of a few rows, which stay below any such bound.
bool decoded_by_rows(const TiffFile& f, const TiffInfo& info, int64_t above) {
  return !info.tiled && int64_t(TIFFStripSize(f.get())) > above;
}

// The rows of a strip image decoded one at a time, in order, through one open handle per plane (a
// handle's scanline interface decodes its strip forward from the last row it gave, and restarts the
// strip for a row above it). With `keep` (TiffReader), the full-width rows of the last window stay:
// a window that starts inside them decodes only the rows below them; memory is the window's rows at
// full width and the window. Without (one read_geotiff window), rows go straight into the window.
class RowDecoder {
 public:
  RowDecoder(std::string path, const TiffInfo& info, bool keep) : path_(std::move(path)), info_(info), keep_(keep) {
    sparse_ = sparse_value(info.type, info.nodata);
  }

  // With `progress` (without keep): called with the rows decoded so far after each row, of the
  // window's height, or twice it when a very compressible file is first decoded once (below).
  Raster read(const Window& win, const ReadProgress* progress = nullptr) {
    TiffFile& f = plane(0);
    const uint64_t W = uint64_t(info_.width), bands = uint64_t(info_.bands);
    const uint64_t kept = uint64_t(keep_ ? win.height : 1) * W * bands * sizeof(float);
    const uint64_t window_bytes = uint64_t(win.width) * uint64_t(win.height) * bands * sizeof(float);
    if (const uint64_t memory = memory_limit(); memory > 0 && kept + window_bytes > memory)
      f.fail(str("a ", win.width, "x", win.height, " window of ", info_.width, "x", info_.height, "x", info_.bands,
                 " needs ", gib(window_bytes), " as float32 and ", gib(kept), " for the rows it decodes, more than the ",
                 gib(memory), " of memory this process may use"));
    check_listed_blocks(f, info_);
    // As read_window: the rows the window decodes from stored strips (at full width) within the file's
    // bytes (uncompressed) or 4096 times them.
    std::error_code ec;
    const uint64_t file_bytes = std::filesystem::file_size(path_, ec);
    uint64_t want = 0;
    const int planes = info_.planar_separate ? info_.bands : 1;
    const uint64_t per_row = W * (bands / uint64_t(planes)) * uint64_t(bytes_of(info_.type));
    for (int p = 0; p < planes; ++p)
      for (int y = win.y0; y < win.y0 + win.height;) {
        const uint32_t strip = TIFFComputeStrip(f.get(), uint32_t(y), uint16_t(p));
        const int next = std::min(win.y0 + win.height, (y / info_.block_rows + 1) * info_.block_rows);
        if (!is_sparse(f.get(), strip)) want += uint64_t(next - y) * per_row;
        y = next;
      }
    const uint64_t limit = info_.compression == COMPRESSION_NONE ? file_bytes : file_bytes * 4096 + (1u << 20);
    if (!ec && want > limit)
      f.fail(str("header claims ", info_.width, "x", info_.height, "x", info_.bands, " ",
                 sample_type_name(info_.type), " pixels but the file has only ", file_bytes,
                 " bytes (truncated or corrupt)"));

    Raster out = window_raster(info_, win);
    auto crop = [&](const std::vector<float>& row, int r) {  // row r of the window from a full-width row
      for (int b = 0; b < info_.bands; ++b) {
        const float* src = row.data() + size_t(b) * W + size_t(win.x0);
        std::copy(src, src + win.width, out.band(b) + size_t(r) * size_t(win.width));
      }
    };
    if (!keep_) {
      std::vector<float> row;
      // As read_window: a compressed file claiming far more than its bytes is decoded once (a row at a
      // time) before the window is allocated, so that one not holding what it claims fails in bounded
      // memory (one row and the compressed strip, which the file's size bounds).
      const bool verify = info_.compression != COMPRESSION_NONE && !ec && want > 64 * file_bytes;
      const int64_t total = (verify ? 2 : 1) * int64_t(win.height);
      int64_t done = 0;
      if (verify) {
        for (int r = 0; r < win.height; ++r) {
          decode_row(win.y0 + r, row);
          if (progress) (*progress)(++done, total);
        }
        std::fill(next_.begin(), next_.end(), -1);  // decode again from the strips' starts
      }
      out.data.resize(size_t(bands) * size_t(win.width) * size_t(win.height));
      for (int r = 0; r < win.height; ++r) {
        decode_row(win.y0 + r, row);
        crop(row, r);
        if (progress) (*progress)(++done, total);
      }
      return out;
    }
    if (win.y0 < y0_ || win.y0 > y0_ + int64_t(rows_.size())) {  // above the kept rows, or past them
      rows_.clear();
      y0_ = win.y0;
    }
    while (y0_ < win.y0) rows_.pop_front(), ++y0_;
    while (y0_ + int64_t(rows_.size()) < win.y0 + win.height) {
      const int y = int(y0_ + int64_t(rows_.size()));
      rows_.emplace_back();
      try {
        decode_row(y, rows_.back());
      } catch (...) {  // no half-decoded row stays kept (decode_row has reset the handles)
        rows_.pop_back();
        throw;
      }
    }
    out.data.resize(size_t(bands) * size_t(win.width) * size_t(win.height));  // after the rows: a bad strip fails first
    for (int r = 0; r < win.height; ++r) crop(rows_[size_t(r + win.y0 - y0_)], r);
    return out;
  }

 private:
  TiffFile& plane(int p) {
    if (planes_.empty()) {
      planes_.resize(size_t(info_.planar_separate ? info_.bands : 1));
      next_.assign(planes_.size(), -1);
    }
    auto& h = planes_[size_t(p)];
    if (!h) h = std::make_unique<TiffFile>(path_, "r");
    return *h;
  }

  // Row y of every band into `row` (bands x width floats, band-major). On an error every handle's
  // position is forgotten (libtiff's is then one row past ours): the next row restarts its strip.
  void decode_row(int y, std::vector<float>& row) {
    const size_t W = size_t(info_.width);
    row.assign(size_t(info_.bands) * W, 0.f);
    const int planes = info_.planar_separate ? info_.bands : 1, nb = info_.planar_separate ? 1 : info_.bands;
    for (int p = 0; p < planes; ++p) {
      const int band0 = info_.planar_separate ? p : 0;
      // (A left-out band opens no handle: strip numbers are the file's, any handle answers.)
      if (is_sparse(plane(0).get(), TIFFComputeStrip(plane(0).get(), uint32_t(y), uint16_t(p)))) {
        std::fill(row.begin() + std::ptrdiff_t(size_t(band0) * W), row.begin() + std::ptrdiff_t(size_t(band0 + nb) * W),
                  sparse_);
        continue;
      }
      TiffFile& h = plane(p);
      // (Sized here, after read()'s checks: a header can claim a row of gigabytes.)
      line_.resize(std::max(line_.size(), size_t(TIFFScanlineSize(h.get()))));
      // libtiff's codecs decode a strip forward only, without skipping rows: from the next row this
      // handle gives, or from the strip's first row when y lies above that or in a later strip.
      const int first = y / info_.block_rows * info_.block_rows;
      int64_t& next = next_[size_t(p)];
      if (next > y || next < first) next = first;
      for (; next <= y; ++next)
        if (TIFFReadScanline(h.get(), line_.data(), uint32_t(next), uint16_t(p)) < 0) {
          const int64_t bad = next;
          std::fill(next_.begin(), next_.end(), -1);
          h.fail(str("cannot decode row ", bad, info_.planar_separate ? str(" of band ", p + 1) : std::string(),
                     " (truncated or corrupt file?)"));
        }
      with_sample_type(info_.type, [&](auto sample) {
        using T = decltype(sample);
        const T* s = reinterpret_cast<const T*>(line_.data());
        for (size_t c = 0; c < W; ++c)
          for (int k = 0; k < nb; ++k) row[size_t(band0 + k) * W + c] = float(s[c * size_t(nb) + size_t(k)]);
      });
    }
  }

  std::string path_;
  TiffInfo info_;
  bool keep_ = true;
  float sparse_ = 0.f;
  std::vector<std::unique_ptr<TiffFile>> planes_;  // opened as first needed
  std::vector<int64_t> next_;                      // per plane: the row its handle gives next (-1: none yet)
  std::vector<unsigned char> line_;                // one scanline of the widest plane
  std::deque<std::vector<float>> rows_;            // with keep: rows [y0_, y0_ + rows_.size())
  int64_t y0_ = 0;
};

Raster read_window(const std::string& path, const Window* window, const ReadProgress* progress) {
  TiffFile f(path, "r");
  TiffInfo info = info_of(f);
  Window win = window ? *window : Window{0, 0, info.width, info.height};
  if (win.width <= 0 || win.height <= 0 || win.x0 < 0 || win.y0 < 0 ||
      int64_t(win.x0) + win.width > info.width || int64_t(win.y0) + win.height > info.height)
    f.fail(str("window x0=", win.x0, " y0=", win.y0, " ", win.width, "x", win.height, " is outside the ",
               info.width, "x", info.height, " image"));
  Raster out = window_raster(info, win);

  TIFF* tif = f.get();
  Blocks b = blocks_of(f, info);
  const int nbytes = bytes_of(info.type);
  const int spp_blk = info.planar_separate ? 1 : info.bands;  // samples per pixel inside one block
  const tmsize_t block_bytes = info.tiled ? TIFFTileSize(tif) : TIFFStripSize(tif);
  const tmsize_t want_max = tmsize_t(b.bw) * b.bh * spp_blk * nbytes;
  if (block_bytes < want_max) f.fail(str("block size ", block_bytes, " bytes is smaller than its pixels need"));
  // A file in very large strips (a whole image in one): the window's rows alone, one at a time.
  if (decoded_by_rows(f, info, kRowStripBytes)) return RowDecoder(path, info, false).read(win, progress);
  const char* kind = info.tiled ? "tile" : "strip";
  // A true image can still be larger than this machine: the raster (float32) and the block buffer must
  // fit in the memory this process may use. (2^56 values at most, checked with the header, and a block
  // no larger than the image rounded up to 16: the sum cannot wrap.)
  const uint64_t raster_bytes = uint64_t(win.width) * uint64_t(win.height) * uint64_t(info.bands) * sizeof(float);
  if (const uint64_t memory = memory_limit(); memory > 0 && raster_bytes + uint64_t(block_bytes) > memory)
    f.fail(str(window ? str("a ", win.width, "x", win.height, " window") : std::string("the whole image"), " of ",
               info.width, "x", info.height, "x", info.bands, " needs ", gib(raster_bytes), " as float32 and ",
               gib(uint64_t(block_bytes)), " for a ", kind, ", more than the ", gib(memory),
               " of memory this process may use (cloud_mask, remove_clouds, classify --classify tiles and raster_diff "
               "read large images in stripes)"));
  const int planes = info.planar_separate ? info.bands : 1;
  check_listed_blocks(f, info);
  // Calls block(id, by0, bx0, plane, r0, r1, c0, c1) for every block the window needs, in file order
  // within each row of blocks, and row(by0) after each row of blocks; rows [r0, r1) and columns
  // [c0, c1) of the window lie in the block.
  auto visit_blocks = [&](auto&& block, auto&& row) {
    for (int by0 = (win.y0 / b.bh) * b.bh; by0 < win.y0 + win.height; by0 += b.bh) {
      for (int bx0 = (win.x0 / b.bw) * b.bw; bx0 < win.x0 + win.width; bx0 += b.bw)
        for (int p = 0; p < planes; ++p) {
          const int r0 = std::max(by0, win.y0), r1 = std::min({by0 + b.bh, win.y0 + win.height, info.height});
          const int c0 = std::max(bx0, win.x0), c1 = std::min(bx0 + b.bw, win.x0 + win.width);
          const uint32_t id = info.tiled ? TIFFComputeTile(tif, uint32_t(bx0), uint32_t(by0), 0, uint16_t(p))
                                         : TIFFComputeStrip(tif, uint32_t(by0), uint16_t(p));
          block(id, by0, bx0, p, r0, r1, c0, c1);
        }
      row(by0);
    }
  };
  // A corrupt header can claim any size: the pixels a window asks for in the blocks the file stores
  // must fit in the file (uncompressed) or a generous inflation of it (compressed), before anything
  // is allocated. (Sparse blocks hold nothing: what they read as costs the file no bytes.)
  std::error_code ec;
  const uint64_t file_bytes = std::filesystem::file_size(path, ec);
  uint64_t want = 0;  // bytes of the window's pixels in stored blocks
  bool any_stored = false;
  visit_blocks(
      [&](uint32_t id, int, int, int, int r0, int r1, int c0, int c1) {
        if (is_sparse(tif, id)) return;
        any_stored = true;
        want += uint64_t(r1 - r0) * uint64_t(c1 - c0) * uint64_t(spp_blk) * uint64_t(nbytes);
      },
      [](int) {});
  // A stored block is decoded whole into the block buffer: the file must be able to hold one.
  if (any_stored) want = std::max(want, uint64_t(block_bytes));
  const uint64_t limit = info.compression == COMPRESSION_NONE ? file_bytes : file_bytes * 4096 + (1u << 20);
  if (!ec && want > limit)
    f.fail(str("header claims ", info.width, "x", info.height, "x", info.bands, " ", sample_type_name(info.type),
               " pixels but the file has only ", file_bytes, " bytes (truncated or corrupt)"));
  // The block buffer, allocated at the first stored block decoded.
  std::vector<unsigned char> buf;

  const float sparse = sparse_value(info.type, info.nodata);  // what a sparse block's pixels read as
  // The rows decoded so far, for `progress`, of this many: one pass, or two with the verification below.
  int64_t rows_done = 0, rows_total = win.height;
  // Decodes every block the window needs; with `keep`, scatters it into `out`.
  auto decode_blocks = [&](bool keep) {
    auto block = [&](uint32_t id, int by0, int bx0, int p, int r0, int r1, int c0, int c1) {
      const int band0 = info.planar_separate ? p : 0, nb = info.planar_separate ? 1 : info.bands;
      if (is_sparse(tif, id)) {
        if (keep)
          for (int k = band0; k < band0 + nb; ++k)
            for (int r = r0; r < r1; ++r) {
              float* row = out.band(k) + size_t(r - win.y0) * win.width;
              std::fill(row + (c0 - win.x0), row + (c1 - win.x0), sparse);
            }
        return;
      }
      buf.resize(static_cast<size_t>(block_bytes));  // at the first stored block: none for a sparse window
      const tmsize_t got = info.tiled ? TIFFReadEncodedTile(tif, id, buf.data(), block_bytes)
                                      : TIFFReadEncodedStrip(tif, id, buf.data(), block_bytes);
      if (got < 0) f.fail(str("cannot decode ", kind, " ", id, " (truncated or corrupt file?)"));
      // Bytes up to the end of the last row this window uses.
      const tmsize_t need = tmsize_t(r1 - by0) * b.bw * spp_blk * nbytes;
      if (got < need) f.fail(str(kind, " ", id, " is truncated: ", got, " of ", need, " bytes"));
      if (!keep) return;
      with_sample_type(info.type, [&](auto sample) {
        scatter<decltype(sample)>(buf.data(), b.bw, spp_blk, band0, nb, bx0, by0, r0, r1, c0, c1, win, out);
      });
    };
    visit_blocks(block, [&](int by0) {
      rows_done += std::min(by0 + b.bh, win.y0 + win.height) - std::max(by0, win.y0);
      if (progress) (*progress)(rows_done, rows_total);
    });
  };
  // A compressed file that claims far more pixels than its bytes (64x here; real Sentinel tiles
  // compress 2-4x) is decoded once into the one block buffer (at most kRowStripBytes for strips:
  // larger ones go a row at a time, above) before the raster is allocated, so a file that does not
  // hold what it claims fails with bounded memory. A true, very compressible image pays a second decode.
  if (info.compression != COMPRESSION_NONE && !ec && want > 64 * file_bytes) {
    rows_total = 2 * int64_t(win.height);
    decode_blocks(false);
  }
  out.data.assign(size_t(out.bands) * out.width * out.height, 0.f);
  decode_blocks(true);
  return out;
}

// One float -> the file's type: round to nearest and clamp for integers.
template <typename T>
T encode(float v) {
  if constexpr (std::is_floating_point_v<T>) {
    return T(v);
  } else {
    double r = std::round(double(v));
    r = std::clamp(r, double(std::numeric_limits<T>::min()), double(std::numeric_limits<T>::max()));
    return T(r);
  }
}

template <typename T>
void gather(const Raster& in, int band0, int nbands_blk, int bx0, int by0, int bw, int bh, unsigned char* dst) {
  T* d = reinterpret_cast<T*>(dst);
  for (int r = 0; r < bh; ++r)
    for (int c = 0; c < bw; ++c)
      for (int k = 0; k < nbands_blk; ++k) {
        int y = by0 + r, x = bx0 + c;
        // Tiles past the image edge are padded with zeros.
        float v = (y < in.height && x < in.width) ? in.band(band0 + k)[size_t(y) * in.width + x] : 0.f;
        d[(size_t(r) * bw + c) * nbands_blk + k] = encode<T>(v);
      }
}

std::atomic<uint64_t> g_tmp_counter{0};

// Every tag of a new image: size, sample layout, strips or tiles, georeferencing, band names.
Blocks set_tags(TIFF* tif, int width, int height, int bands, const WriteOptions& opt, const GeoInfo& geo,
                const std::vector<std::string>& band_names, std::optional<double> nodata) {
  const uint16_t bps = layout_of(opt.type).bits, fmt = layout_of(opt.type).format;
  TIFFSetField(tif, TIFFTAG_IMAGEWIDTH, uint32_t(width));
  TIFFSetField(tif, TIFFTAG_IMAGELENGTH, uint32_t(height));
  TIFFSetField(tif, TIFFTAG_SAMPLESPERPIXEL, uint16_t(bands));
  TIFFSetField(tif, TIFFTAG_BITSPERSAMPLE, bps);
  TIFFSetField(tif, TIFFTAG_SAMPLEFORMAT, fmt);
  TIFFSetField(tif, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_MINISBLACK);
  TIFFSetField(tif, TIFFTAG_PLANARCONFIG, opt.planar_separate ? PLANARCONFIG_SEPARATE : PLANARCONFIG_CONTIG);
  if (bands > 1) {  // like GDAL: the bands after the first are "unspecified" extra samples
    std::vector<uint16_t> extra(size_t(bands - 1), EXTRASAMPLE_UNSPECIFIED);
    TIFFSetField(tif, TIFFTAG_EXTRASAMPLES, uint16_t(extra.size()), extra.data());
  }
  TIFFSetField(tif, TIFFTAG_COMPRESSION, opt.deflate ? COMPRESSION_ADOBE_DEFLATE : COMPRESSION_NONE);
  if (opt.deflate)
    TIFFSetField(tif, TIFFTAG_PREDICTOR,
                 uint16_t(is_floating(opt.type) ? PREDICTOR_FLOATINGPOINT : PREDICTOR_HORIZONTAL));
  Blocks b;
  if (opt.tiled) {
    TIFFSetField(tif, TIFFTAG_TILEWIDTH, uint32_t(opt.tile_size));
    TIFFSetField(tif, TIFFTAG_TILELENGTH, uint32_t(opt.tile_size));
    b.bw = b.bh = opt.tile_size;
  } else {
    uint32_t rps = opt.rows_per_strip > 0 ? uint32_t(opt.rows_per_strip) : TIFFDefaultStripSize(tif, 0);
    rps = std::min<uint32_t>(std::max<uint32_t>(rps, 1), uint32_t(height));
    TIFFSetField(tif, TIFFTAG_ROWSPERSTRIP, rps);
    b.bw = width;
    b.bh = int(rps);
  }
  write_geo(tif, geo);
  write_band_names(tif, band_names);
  write_nodata(tif, nodata);
  return b;
}

// Encodes the block of `raster` at (bx0, by0) (bw x bh pixels, bands [band0, band0 + nb)) and
// writes it as tile or strip `plane`; pixels past the raster's edge are written as 0.
void write_block(TiffFile& f, const Raster& raster, const WriteOptions& opt, int plane, int band0, int nb, int bx0,
                 int by0, int bw, int bh, std::vector<unsigned char>& buf, uint32_t tile_x, uint32_t tile_y) {
  TIFF* tif = f.get();
  buf.assign(size_t(bw) * size_t(bh) * size_t(nb) * bytes_of(opt.type), 0);
  with_sample_type(opt.type, [&](auto sample) {
    gather<decltype(sample)>(raster, band0, nb, bx0, by0, bw, bh, buf.data());
  });
  const tmsize_t wrote =
      opt.tiled ? TIFFWriteEncodedTile(tif, TIFFComputeTile(tif, tile_x, tile_y, 0, uint16_t(plane)), buf.data(),
                                       tmsize_t(buf.size()))
                : TIFFWriteEncodedStrip(tif, TIFFComputeStrip(tif, tile_y, uint16_t(plane)), buf.data(),
                                        tmsize_t(buf.size()));
  if (wrote < 0) f.fail("cannot write pixel data");
}

void write_to(TiffFile& f, const Raster& raster, const WriteOptions& opt) {
  const Blocks b =
      set_tags(f.get(), raster.width, raster.height, raster.bands, opt, raster.geo, raster.band_names, raster.nodata);
  const int planes = opt.planar_separate ? raster.bands : 1;
  const int nb = opt.planar_separate ? 1 : raster.bands;
  std::vector<unsigned char> buf;
  for (int p = 0; p < planes; ++p)
    for (int by0 = 0; by0 < raster.height; by0 += b.bh)
      for (int bx0 = 0; bx0 < raster.width; bx0 += b.bw) {
        // Strips end at the image; tiles are always whole.
        const int bh = opt.tiled ? b.bh : std::min(b.bh, raster.height - by0);
        write_block(f, raster, opt, p, opt.planar_separate ? p : 0, nb, bx0, by0, b.bw, bh, buf, uint32_t(bx0),
                    uint32_t(by0));
      }
  f.close();
}

}  // namespace

int GeoInfo::crs_code() const {
  // GeoKeyDirectory: a header of 4 shorts, then (key, location, count, value) per key; location 0: the
  // value is the short itself.
  int geographic = 0;
  for (size_t i = 4; i + 3 < geokeys.size(); i += 4) {
    if (geokeys[i + 1] != 0) continue;
    if (geokeys[i] == 3072) return geokeys[i + 3];
    if (geokeys[i] == 2048) geographic = geokeys[i + 3];
  }
  return geographic;
}

std::string grid_mismatch(const GeoInfo& a, const GeoInfo& b) {
  if (!a.present() || !b.present()) return "";
  if (a.crs_code() != b.crs_code()) return str("CRS EPSG:", a.crs_code(), " against EPSG:", b.crs_code());
  // Positions agree within a millionth of a pixel (of the first's scale; 1e-9 without one).
  const double scale = a.pixel_scale.empty() ? 1e-3 : std::fabs(a.pixel_scale[0]);
  auto differ = [&](const std::vector<double>& x, const std::vector<double>& y) {
    if (x.size() != y.size()) return true;
    for (size_t i = 0; i < x.size(); ++i)
      if (std::fabs(x[i] - y[i]) > 1e-6 * std::max(scale, 1e-3)) return true;
    return false;
  };
  if (differ(a.pixel_scale, b.pixel_scale)) return "pixel scales differ";
  if (differ(a.tiepoints, b.tiepoints))
    return a.tiepoints.size() >= 5 && b.tiepoints.size() >= 5
               ? str("tie points differ (", a.tiepoints[3], ", ", a.tiepoints[4], " against ", b.tiepoints[3], ", ",
                     b.tiepoints[4], ")")
               : std::string("tie points differ");
  if (differ(a.transformation, b.transformation)) return "transformations differ";
  return "";
}

TiffInfo read_tiff_info(const std::string& path) {
  TiffFile f(path, "r");
  return info_of(f);
}

// Memory exhaustion while reading (the file's dimensions are bounded before allocating, but a large
// valid image can still exceed what this machine has): an Error naming the file, not std::bad_alloc.
Raster read_checked(const std::string& path, const Window* window, const ReadProgress* progress = nullptr) {
  const auto out_of_memory = [&] {
    return Error(str(path, ": out of memory while reading this GeoTIFF",
                     window ? str(" (window ", window->width, "x", window->height, ")") : std::string()));
  };
  try {
    return read_window(path, window, progress);
  } catch (const std::bad_alloc&) {
    throw out_of_memory();
  } catch (const std::length_error&) {  // a size past what a vector holds
    throw out_of_memory();
  }
}

struct TiffReader::Impl {
  std::string path;
  TiffInfo info;
  bool by_rows = false;
  std::unique_ptr<RowDecoder> rows;  // when by_rows
};

TiffReader::TiffReader(const std::string& path, int64_t rows_above) : impl_(std::make_unique<Impl>()) {
  TiffFile f(path, "r");
  impl_->path = path;
  impl_->info = info_of(f);
  impl_->by_rows = decoded_by_rows(f, impl_->info, rows_above);
  if (impl_->by_rows) impl_->rows = std::make_unique<RowDecoder>(path, impl_->info, true);
}
TiffReader::~TiffReader() = default;
TiffReader::TiffReader(TiffReader&&) noexcept = default;
TiffReader& TiffReader::operator=(TiffReader&&) noexcept = default;
const TiffInfo& TiffReader::info() const { return impl_->info; }
bool TiffReader::by_rows() const { return impl_->by_rows; }
int TiffReader::stripe_rows() const { return impl_->by_rows ? 1 : impl_->info.block_rows; }

Raster TiffReader::read(const Window& w) {
  if (!impl_->by_rows) return read_geotiff(impl_->path, w);
  const TiffInfo& info = impl_->info;
  if (w.width <= 0 || w.height <= 0 || w.x0 < 0 || w.y0 < 0 || int64_t(w.x0) + w.width > info.width ||
      int64_t(w.y0) + w.height > info.height)
    throw Error(str("geotiff: ", impl_->path, ": window x0=", w.x0, " y0=", w.y0, " ", w.width, "x", w.height,
                    " is outside the ", info.width, "x", info.height, " image"));
  const auto out_of_memory = [&] {
    return Error(str(impl_->path, ": out of memory while reading this GeoTIFF (window ", w.width, "x", w.height, ")"));
  };
  try {
    return impl_->rows->read(w);
  } catch (const std::bad_alloc&) {
    throw out_of_memory();
  } catch (const std::length_error&) {  // a size past what a vector holds
    throw out_of_memory();
  }
}

Raster read_geotiff(const std::string& path) { return read_checked(path, nullptr); }
Raster read_geotiff(const std::string& path, const Window& window) { return read_checked(path, &window); }
Raster read_geotiff(const std::string& path, const ReadProgress& progress) {
  return read_checked(path, nullptr, progress ? &progress : nullptr);
}

void write_geotiff(const std::string& path, const Raster& raster, const WriteOptions& options) {
  NIMBUS_CHECK(raster.width > 0 && raster.height > 0 && raster.bands > 0 && raster.bands < 65536 &&
                   raster.width <= kMaxTiffSide && raster.height <= kMaxTiffSide,
               "geotiff: ", path,
               ": cannot write a ", raster.width, "x", raster.height, "x", raster.bands, " raster");
  NIMBUS_CHECK(raster.data.size() == size_t(raster.bands) * raster.width * raster.height, "geotiff: ", path,
               ": raster holds ", raster.data.size(), " values but ", raster.bands, "x", raster.height, "x",
               raster.width, " needs ", size_t(raster.bands) * raster.width * raster.height);
  NIMBUS_CHECK(raster.band_names.empty() || raster.band_names.size() == size_t(raster.bands), "geotiff: ", path, ": ",
               raster.band_names.size(), " band names for ", raster.bands, " bands");
  NIMBUS_CHECK(!options.tiled || (options.tile_size >= 16 && options.tile_size <= 65536 && options.tile_size % 16 == 0),
               "geotiff: ", path, ": tile size ", options.tile_size, " must be a multiple of 16 from 16 to 65536");
  if (!is_floating(options.type))
    for (float v : raster.data)
      NIMBUS_CHECK(!std::isnan(v), "geotiff: ", path, ": cannot write NaN as ", sample_type_name(options.type));
  refuse_if_input(path);
  NIMBUS_CHECK(!std::filesystem::is_directory(path), "geotiff: ", path, ": is a folder, not a file name");
  const std::string target = atomic_output_path(path);  // no device or pipe; a link's file, the link kept
  // Written next to the target and renamed, so a reader never sees half a file.
  const std::string tmp =
      str(target, ".tmp", uint64_t(::getpid()), "_", g_tmp_counter.fetch_add(1, std::memory_order_relaxed));
  const TempFile guard(tmp);  // removed if a signal stops the process before the rename
  try {
    TiffFile f(tmp, write_mode(raster.width, raster.height, raster.bands, options));
    write_to(f, raster, options);
    std::error_code ec;
    keep_target_mode(tmp, target);
    std::filesystem::rename(tmp, target, ec);
    NIMBUS_CHECK(!ec, "geotiff: ", path, ": cannot rename temporary file into place: ", ec.message());
  } catch (const Error& e) {
    std::error_code ignore;
    std::filesystem::remove(tmp, ignore);
    // Name the file the user asked for: the error may only know the temporary next to it.
    const std::string what = e.what();
    if (what.find(path + ":") != std::string::npos) throw;
    throw Error(str("geotiff: cannot write ", path, ": ", what));
  } catch (...) {
    std::error_code ignore;
    std::filesystem::remove(tmp, ignore);
    throw;
  }
}

struct TiledGeoTiffWriter::Impl {
  std::string path, target, tmp;  // target: atomic_output_path(path)
  std::unique_ptr<TempFile> guard;  // tmp, removed if a signal stops the process
  int width = 0, height = 0, bands = 0;
  WriteOptions opt;
  std::unique_ptr<TiffFile> file;
  std::vector<char> written;  // per tile
  std::vector<unsigned char> buf;
  Raster block;  // the tile being encoded
};

TiledGeoTiffWriter::TiledGeoTiffWriter(const std::string& path, int width, int height, int bands,
                                       const WriteOptions& options, const GeoInfo& geo,
                                       const std::vector<std::string>& band_names, std::optional<double> nodata)
    : impl_(std::make_unique<Impl>()) {
  // Before any of the (long) work that fills it: not an input, not a folder (the rename would fail
  // only at the end).
  refuse_if_input(path);
  NIMBUS_CHECK(!std::filesystem::is_directory(path), "geotiff: ", path, ": is a folder, not a file name");
  Impl& m = *impl_;
  m.path = path;
  m.width = width, m.height = height, m.bands = bands;
  m.opt = options;
  m.opt.tiled = true;
  NIMBUS_CHECK(width > 0 && height > 0 && bands > 0 && bands < 65536 && width <= kMaxTiffSide &&
                   height <= kMaxTiffSide,
               "geotiff: ", path, ": cannot write a ", width,
               "x", height, "x", bands, " raster");
  NIMBUS_CHECK(!options.planar_separate, "geotiff: ", path, ": the tiled writer writes pixel-interleaved tiles only");
  NIMBUS_CHECK(m.opt.tile_size >= 16 && m.opt.tile_size <= 65536 && m.opt.tile_size % 16 == 0, "geotiff: ", path,
               ": tile size ", m.opt.tile_size, " must be a multiple of 16 from 16 to 65536");
  NIMBUS_CHECK(band_names.empty() || band_names.size() == size_t(bands), "geotiff: ", path, ": ", band_names.size(),
               " band names for ", bands, " bands");
  m.target = atomic_output_path(path);  // no device or pipe; a link's file, the link kept
  m.tmp = str(m.target, ".tmp", uint64_t(::getpid()), "_", g_tmp_counter.fetch_add(1, std::memory_order_relaxed));
  m.guard = std::make_unique<TempFile>(m.tmp);
  // libtiff numbers tiles with 32 bits.
  const uint64_t tiles = uint64_t((width + m.opt.tile_size - 1) / m.opt.tile_size) *
                         uint64_t((height + m.opt.tile_size - 1) / m.opt.tile_size);
  NIMBUS_CHECK(tiles <= std::numeric_limits<uint32_t>::max(), "geotiff: ", path, ": ", tiles, " tiles of ",
               m.opt.tile_size, " pixels: more than a TIFF numbers; use larger tiles");
  m.file = std::make_unique<TiffFile>(m.tmp, write_mode(width, height, bands, m.opt));
  set_tags(m.file->get(), width, height, bands, m.opt, geo, band_names, nodata);
  m.written.assign(size_t(tiles_x()) * size_t(tiles_y()), 0);
}

TiledGeoTiffWriter::~TiledGeoTiffWriter() {
  if (impl_ && impl_->file) {  // not finished: an error on the way
    impl_->file.reset();
    std::error_code ignore;
    std::filesystem::remove(impl_->tmp, ignore);
  }
}

int TiledGeoTiffWriter::tile() const { return impl_->opt.tile_size; }
int TiledGeoTiffWriter::tiles_x() const { return (impl_->width + tile() - 1) / tile(); }
int TiledGeoTiffWriter::tiles_y() const { return (impl_->height + tile() - 1) / tile(); }

void TiledGeoTiffWriter::write_tile(int tx, int ty, const float* chw) {
  Impl& m = *impl_;
  NIMBUS_CHECK(m.file, "geotiff: ", m.path, ": write_tile after finish");
  NIMBUS_CHECK(tx >= 0 && ty >= 0 && tx < tiles_x() && ty < tiles_y(), "geotiff: ", m.path, ": tile (", tx, ", ", ty,
               ") is outside the ", tiles_x(), "x", tiles_y(), " tile grid");
  char& done = m.written[size_t(ty) * size_t(tiles_x()) + size_t(tx)];
  NIMBUS_CHECK(!done, "geotiff: ", m.path, ": tile (", tx, ", ", ty, ") written twice");
  const int T = tile(), x0 = tx * T, y0 = ty * T;
  m.block.width = std::min(T, m.width - x0);
  m.block.height = std::min(T, m.height - y0);
  m.block.bands = m.bands;
  m.block.data.assign(chw, chw + size_t(m.bands) * size_t(m.block.width) * size_t(m.block.height));
  if (!is_floating(m.opt.type))
    for (float v : m.block.data)
      NIMBUS_CHECK(!std::isnan(v), "geotiff: ", m.path, ": cannot write NaN as ", sample_type_name(m.opt.type));
  write_block(*m.file, m.block, m.opt, 0, 0, m.bands, 0, 0, T, T, m.buf, uint32_t(x0), uint32_t(y0));
  done = 1;
}

void TiledGeoTiffWriter::finish() {
  Impl& m = *impl_;
  NIMBUS_CHECK(m.file, "geotiff: ", m.path, ": finished twice");
  const size_t missing = size_t(std::count(m.written.begin(), m.written.end(), 0));
  NIMBUS_CHECK(missing == 0, "geotiff: ", m.path, ": ", missing, " of ", m.written.size(), " tiles never written");
  m.file->close();
  m.file.reset();
  std::error_code ec;
  keep_target_mode(m.tmp, m.target);
  std::filesystem::rename(m.tmp, m.target, ec);
  if (ec) {
    std::error_code ignore;
    std::filesystem::remove(m.tmp, ignore);
    throw Error(str("geotiff: ", m.path, ": cannot rename temporary file into place: ", ec.message()));
  }
}

void FiniteCount::add(const Raster& rows, int y0) {
  const size_t plane = size_t(rows.height) * size_t(rows.width);
  for (size_t i = 0; i < rows.data.size(); ++i) {
    if (std::isfinite(rows.data[i])) continue;
    const int b = plane ? int(i / plane) : 0, y = y0 + (rows.width ? int(i % plane / size_t(rows.width)) : 0),
              x = rows.width ? int(i % plane % size_t(rows.width)) : 0;
    if (bad++ == 0 || std::tie(b, y, x) < std::tie(band, row, column)) band = b, row = y, column = x;
  }
  values += rows.data.size();
}

void FiniteCount::check(const std::string& path) const {
  if (bad == 0) return;
  throw Error(str(path, ": ", bad, " of ", values, " values are NaN or infinite (the first in band ", band + 1,
                  ", row ", row, ", column ", column, "); this input needs finite values"));
}

void check_finite(const Raster& r, const std::string& path) {
  FiniteCount c;
  c.add(r, 0);
  c.check(path);
}

}  // namespace nimbus::data
