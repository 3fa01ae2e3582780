// geotiff.h: read and write Sentinel GeoTIFFs with libtiff (+ libgeotiff tags).
//
// In memory every raster is float32, band-major (C, H, W), whatever the file's
// sample type: uint8, int8, uint16 and int16 are exact in float32, int32 and uint32
// up to 2^24, float64 rounded to float32, and the engine works in float32 anyway. The georeferencing tags are carried as they are
// (pixel scale, tie points or transformation, GeoKeys, double and ASCII
// params) so an output written with the input's GeoInfo opens aligned with it
// in GDAL or QGIS.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace nimbus::data {

// A file's sample type. (The first four are the datasets' and the writers' usual ones; the order is
// raster packs' type code.) Reading, int32 and uint32 values beyond 2^24 in magnitude are rounded to
// float32, and float64 values too (those beyond float32's range become infinite, which the apps refuse
// as not finite); writing, integers are rounded and clamped to the type.
enum class SampleType { UInt8, UInt16, Int16, Float32, Int8, UInt32, Int32, Float64 };
bool is_floating(SampleType t);  // float32 or float64: can hold NaN

// The widest and tallest image read or written: 2^30 - 2048 pixels a side, so that every int sum of a
// coordinate and a block, tile or stripe size (up to about twice a side) stays below 2^31. The
// image's value count is not limited by int (a window's reads and every index use 64 bits); a read
// must fit in this machine's memory as float32 (an Error says so before allocating).
constexpr int kMaxTiffSide = (1 << 30) - 2048;
const char* sample_type_name(SampleType t);  // "uint8", ...

struct GeoInfo {
  std::vector<double> pixel_scale;      // ModelPixelScaleTag (33550)
  std::vector<double> tiepoints;        // ModelTiepointTag (33922)
  std::vector<double> transformation;   // ModelTransformationTag (34264)
  std::vector<uint16_t> geokeys;        // GeoKeyDirectoryTag (34735)
  std::vector<double> geo_double_params;  // GeoDoubleParamsTag (34736)
  std::string geo_ascii_params;         // GeoAsciiParamsTag (34737)
  bool present() const { return !geokeys.empty() || !tiepoints.empty() || !transformation.empty(); }
  bool operator==(const GeoInfo&) const = default;  // every tag equal: the same georeferencing
  int crs_code() const;  // EPSG code of ProjectedCSTypeGeoKey (3072), else GeographicTypeGeoKey (2048); 0: none
};

// "" when two rasters of the same size lie on the same grid (the same CRS code, tie point, pixel scale
// and transformation, within a millionth of a pixel), or when either has no georeferencing (nothing to
// compare); else what differs, for an error naming both files. S1 and S2 patches of a triplet must.
std::string grid_mismatch(const GeoInfo& a, const GeoInfo& b);

// The georeferencing of a grid `factor` times coarser on the same origin: its pixel (u, v) covers the
// fine pixels [u f, (u + 1) f) x [v f, (v + 1) f) (a class map of f x f tiles). Pixel scales and the
// transformation's linear part grow by f; tie points' raster positions shrink by f (for PixelIsPoint,
// GTRasterTypeGeoKey 2, by pixel centres). Unchanged without georeferencing.
GeoInfo coarsened_geo(GeoInfo g, int factor);

struct TiffInfo {
  int width = 0, height = 0, bands = 0;
  SampleType type = SampleType::UInt16;
  bool tiled = false;
  int block_rows = 1;            // rows of a strip or a tile: a window's read decodes whole blocks
  bool planar_separate = false;  // PlanarConfiguration 2 (band-interleaved)
  int compression = 1;           // TIFF code: 1 none, 5 LZW, 8/32946 Deflate
  int predictor = 1;             // TIFF code: 1 none, 2 horizontal differencing, 3 floating point
  GeoInfo geo;
  // Band descriptions ("B1", "B8A", ...) from the GDAL_METADATA tag (42112), where GDAL and
  // rasterio keep them; empty when the file has none, else one per band ("" where a band has none).
  std::vector<std::string> band_names;
  // GDAL's nodata value (tag 42113, one for every band; NaN allowed): pixels holding it are not data
  // (the edge of a Sentinel-2 swath: 0). Absent when the file has none.
  std::optional<double> nodata;
};

// A pixel window: columns [x0, x0 + width), rows [y0, y0 + height).
struct Window {
  int x0 = 0, y0 = 0, width = 0, height = 0;
};

struct Raster {
  int width = 0, height = 0, bands = 0;
  SampleType type = SampleType::Float32;  // the file's type (what a write will use by default)
  std::vector<float> data;                // bands * height * width, band-major
  GeoInfo geo;
  std::vector<std::string> band_names;    // as TiffInfo; written when not empty (one per band)
  std::optional<double> nodata;           // as TiffInfo; written when set
  float* band(int c) { return data.data() + size_t(c) * size_t(height) * size_t(width); }
  const float* band(int c) const { return data.data() + size_t(c) * size_t(height) * size_t(width); }
};

// Whether `v`, a value read from a file, is that file's nodata value: equal as float32 (what the
// reader holds), or both NaN. False when the file has none.
inline bool is_nodata(float v, std::optional<double> nodata) {
  return nodata && (v == float(*nodata) || (v != v && *nodata != *nodata));
}

// The NaN policy for inputs with no masking convention (EuroSAT tiles, cloud_mask's S2): throws an
// Error naming `path` when any value of r is NaN or infinite (how many, and the first one's band, row
// and column). SEN12MS-CR's readers fill NaN with the window's mean instead (data/normalize.h), as
// DSen2-CR's code does.
void check_finite(const Raster& r, const std::string& path);
// The same for an image read in windows of whole rows (cloud_mask by stripes): add() each window with
// its first row, then check() throws what check_finite would for the whole image (the count over every
// window; the first bad value in the whole image's band-major order).
struct FiniteCount {
  size_t bad = 0, values = 0;
  int band = 0, row = 0, column = 0;  // the first bad value's (band counted from 0)
  void add(const Raster& rows, int y0);
  void check(const std::string& path) const;
};

TiffInfo read_tiff_info(const std::string& path);
// Reads the whole image, or only `window` (only the strips/tiles it touches). A strip or tile the file
// does not store (GDAL's SPARSE_OK=TRUE: offset and byte count 0) reads as the nodata value in the
// file's type, or 0 without one, as GDAL reads it.
Raster read_geotiff(const std::string& path);
Raster read_geotiff(const std::string& path, const Window& window);
// The whole image, calling `progress(done, total)` after each row of strips or tiles is decoded: done
// counts rows, and total is the image's height (twice it when a very compressible file is decoded once
// before the raster is allocated: see read_window). For a progress bar over a large scene.
using ReadProgress = std::function<void(int64_t done, int64_t total)>;
Raster read_geotiff(const std::string& path, const ReadProgress& progress);

// Windows of one file, read in turn: what read_geotiff(path, window) returns, for a tool that streams a
// large image (stripes of rows, or windows moving down). A file stored in strips of more than
// `rows_above` bytes (a whole image in one deflated strip, as tifffile and some exporters write by
// default; or one strip a band), which a window's read would decode whole, is decoded a row at a time
// instead, through handles kept open (one a band when band-interleaved), keeping the full-width rows
// of the last window: each row is decoded once per pass down the image, in memory of about twice a
// window's rows at full width (a window above the kept rows starts that strip's decoding again). Any
// other file is read window by window as read_geotiff does. Not for several threads at once.
class TiffReader {
 public:
  static constexpr int64_t kRowsAbove = int64_t(32) << 20;  // read_geotiff uses the same bound
  explicit TiffReader(const std::string& path, int64_t rows_above = kRowsAbove);
  ~TiffReader();
  TiffReader(TiffReader&&) noexcept;
  TiffReader& operator=(TiffReader&&) noexcept;

  const TiffInfo& info() const;
  bool by_rows() const;  // decoded a row at a time
  // The rows a stripe should be a multiple of so that no strip or tile is decoded for two stripes:
  // the file's block rows, or 1 when decoded a row at a time.
  int stripe_rows() const;
  Raster read(const Window& window);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct WriteOptions {
  SampleType type = SampleType::UInt16;
  // Deflate (TIFF compression 8, GDAL's COMPRESS=DEFLATE) with a predictor, as GDAL's PREDICTOR=2 for
  // integers (each pixel stored as the difference from its left neighbour) and PREDICTOR=3 for float32:
  // lossless, and GDAL, QGIS and rasterio read it. Uncompressed by default, like the distributed datasets.
  bool deflate = false;
  // Layout (added; the defaults give what GDAL writes by default):
  bool tiled = false;            // square tiles of tile_size (a multiple of 16) instead of strips
  int tile_size = 256;
  bool planar_separate = false;  // PlanarConfiguration 2: each band in its own strips/tiles
  int rows_per_strip = 0;        // 0: libtiff's default (about 8 KiB per strip)
};
// Values are rounded (halves away from zero) and clamped to the type's range for
// integer types; NaN cannot be written to an integer type (Error).
// Written to a temporary file and renamed into place.
void write_geotiff(const std::string& path, const Raster& raster, const WriteOptions& options);

// A tiled GeoTIFF written tile by tile, in any order, so that an image larger than memory can be
// produced window by window (remove_clouds on a whole granule). Tiles go to a temporary file next
// to `path`, renamed into place by finish(); destroyed without finish() (an error on the way), the
// writer removes the temporary file. options.tiled is implied; planar_separate is not supported.
class TiledGeoTiffWriter {
 public:
  TiledGeoTiffWriter(const std::string& path, int width, int height, int bands, const WriteOptions& options,
                     const GeoInfo& geo, const std::vector<std::string>& band_names,
                     std::optional<double> nodata = std::nullopt);
  ~TiledGeoTiffWriter();
  TiledGeoTiffWriter(const TiledGeoTiffWriter&) = delete;
  TiledGeoTiffWriter& operator=(const TiledGeoTiffWriter&) = delete;

  int tile() const;
  int tiles_x() const;
  int tiles_y() const;
  // Tile (tx, ty) covers columns [tx * tile, ...) and rows [ty * tile, ...), clipped to the image:
  // chw holds its (bands, h, w) values, band-major, h = min(tile, height - ty * tile), w likewise.
  // Values are encoded as write_geotiff does (rounded, clamped; no NaN for integer types).
  void write_tile(int tx, int ty, const float* chw);
  void finish();  // Error unless every tile was written exactly once

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nimbus::data
