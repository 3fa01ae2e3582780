// cloud_mask: the DSen2-CR cloud / cloud-shadow mask of a Sentinel-2 GeoTIFF.
//
//   cloud_mask --s2 cloudy.tif --out mask.tif [--cloud-threshold 0.2] [--map] [--stripe 512]
// reads a 13-band S2 image (raw DN) in the band order it says (apps/common/band_order.h: --bands, its
// band descriptions or its dataset layout; EuroSAT files keep B8A last) and puts it in the
// detector's order (B1..B8, B8A, B9..B12), runs the §3 detector on the whole image and writes a
// tiled uint8 GeoTIFF with the input's georeferencing: 1 = cloud or shadow, 0 = clear (--map: 1
// cloud, 2 shadow, 0 clear); 255 where the input is its GDAL nodata value in every band (the mask's
// nodata value then; the detector's shadow thresholds leave those pixels out). Prints the cloud and
// shadow fractions of the pixels with data. Written atomically (temp file + rename). Bad input
// (missing file, wrong band count, a NaN) -> exit 1.
// The image is read in stripes of --stripe rows, twice (data/cloud_scene.h): first for the shadow
// thresholds, the only whole-image statistics (a scene with nodata larger than a granule once more
// before, to count the pixels with data), then for the masks; the result is the whole-image
// detector's, bit for bit, and the memory bounded whatever the scene's size (docs/experiment.md has
// a granule's figures). A
// stripe is raised to whole strips or tiles of the input, which a read decodes whole. Progress bars on
// stderr over both passes.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>

#include "apps/common/band_order.h"
#include "apps/common/cli.h"
#include "apps/common/geotiff_output.h"
#include "apps/common/progress.h"
#include "data/sentinel2.h"
#include "data/cloud_detector.h"
#include "data/cloud_scene.h"
#include "data/geotiff.h"

using namespace nimbus;

namespace {

constexpr float kNodataMask = 255.f;  // the mask of a pixel without data (the input's nodata)

int run(int argc, char** argv) {
  cli::Parser p("cloud_mask",
                "Cloud and cloud-shadow mask of a 13-band Sentinel-2 GeoTIFF (DSen2-CR rule-based detector), "
                "written as a uint8 GeoTIFF aligned with the input.");
  p.add_string("s2", "", "input Sentinel-2 GeoTIFF, 13 bands, raw DN (x10000 reflectance)", "FILE");
  p.add_string("out", "", "output mask GeoTIFF (uint8)", "FILE");
  p.add_double("cloud-threshold", 0.2, "cloud score threshold (DSen2-CR: 0.2; the name train_dsen2cr and "
               "cloud_impact use)").range(0, 1);
  p.add_double("threshold", 0.2, "the same as --cloud-threshold (this app's earlier name)").range(0, 1);
  p.add_flag("map", "write 1 cloud / 2 shadow / 0 clear instead of the 0/1 loss mask");
  p.add_int("stripe", 512,
            "rows examined at a time (each pass; the second reads 7 more above and below; a granule's 10980 columns x "
            "13 bands take 0.57 GB per 1,000 rows); the output does not depend on it")
      .range(16, 1000000);
  apps::add_bands_option(p);
  apps::add_compress_option(p);
  p.parse_or_exit(argc, argv);
  const std::string in = p.get_string("s2"), out = p.get_string("out");
  if (in.empty() || out.empty()) throw cli::UsageError("--s2 FILE and --out FILE are required");
  cli::refuse_output_over_input("--out", out, {{"--s2", in}});
  cli::prepare_output_file("--out", out, /*stream_ok=*/false);  // a GeoTIFF
  if (p.given("threshold") && p.given("cloud-threshold") &&
      p.get_double("threshold") != p.get_double("cloud-threshold"))
    throw cli::UsageError("--threshold and --cloud-threshold are one option: give it once");
  const char* threshold_name = p.given("threshold") ? "threshold" : "cloud-threshold";
  const double threshold = p.get_double(threshold_name);
  if (!(threshold > 0 && threshold <= 1))
    throw cli::UsageError(str("--", threshold_name, " must be in (0, 1], got ", threshold));
  int stripe_rows = int(p.get_int("stripe"));
  data::TiffReader tiff(in);  // every stripe through one reader (a file in one compressed strip: by rows)
  const data::TiffInfo info = tiff.info();
  NIMBUS_CHECK(info.bands == data::kS2Bands, in, " has ", info.bands,
               " bands; the detector needs a 13-band Sentinel-2 image (B1..B8, B8A, B9..B12)");
  const int H = info.height, W = info.width;
  // A read decodes whole strips or tiles: stripes of whole blocks, so that none is decoded for every
  // stripe (a file in large compressed strips is decoded a row at a time and needs no such height).
  const int64_t unit = tiff.stripe_rows();
  const int64_t whole_blocks = (int64_t(stripe_rows) + unit - 1) / unit * unit;
  if (whole_blocks > stripe_rows && stripe_rows < H) {
    const int rows = int(std::min<int64_t>(whole_blocks, H));
    std::fprintf(stderr, "cloud_mask: --stripe %d raised to %d rows: %s stores %d rows a %s\n", stripe_rows, rows,
                 in.c_str(), info.block_rows, info.tiled ? "tile" : "strip");
    stripe_rows = rows;
  }
  // The detector reads bands by position (B10 and B11 at 10 and 11): a file in another order (EuroSAT's,
  // B8A last) is put in SEN12MS order first.
  apps::FileBands file_bands(p.get_string("bands"), "cloud_mask");
  const data::BandList bands = file_bands.of(in, info.band_names, info.bands);

  // Pixels that are the file's nodata value in every band (a swath's edge) have no data: the detector's
  // thresholds leave them out and the mask says 255 (nodata) there. Their values are zeroed first, so a
  // NaN nodata value is not taken for a bad pixel. A NaN nodata value: NaN in any band is no data (a
  // swath's edge differs a little per band); another value must hold in every band (0 DN can be a real
  // value in one band). Any other NaN is an error naming the file, after the first pass has counted them
  // (one NaN once changed a tile's shadow fraction from 0.26 to 0).
  data::FiniteCount finite;
  int counted_rows = 0;  // rows [0, counted_rows) are in `finite` (the first pass may read them twice)
  data::SceneReader reader;
  reader.height = H, reader.width = W;
  reader.read = [&](int y0, int rows, std::vector<float>& dn, std::vector<uint8_t>& valid) {
    data::Raster r = tiff.read(data::Window{0, y0, W, rows});
    const size_t hw = size_t(rows) * size_t(W);
    if (info.nodata) {
      const bool nan_nodata = std::isnan(*info.nodata);
      valid.assign(hw, 0);
      for (size_t q = 0; q < hw; ++q) {
        int nodata_bands = 0;
        for (int c = 0; c < r.bands; ++c) nodata_bands += data::is_nodata(r.data[size_t(c) * hw + q], info.nodata);
        valid[q] = nan_nodata ? nodata_bands == 0 : nodata_bands < r.bands;
        if (!valid[q])
          for (int c = 0; c < r.bands; ++c) r.data[size_t(c) * hw + q] = 0.f;
      }
    }
    if (y0 >= counted_rows) finite.add(r, y0), counted_rows = y0 + rows;
    dn = data::reorder_bands(std::move(r.data), hw, bands, data::sen12ms_bands(), in);
  };

  // Pass 1: the shadow thresholds.
  data::SceneThresholds thresholds;
  {
    // Rows read: twice the scene when a scene with nodata is too large to keep its indices (the count,
    // then the sums: data/cloud_scene.h).
    const bool twice = data::scene_counts_first(H, W, info.nodata.has_value());
    Progress bar("cloud_mask statistics", twice ? 2 * int64_t(H) : H, stderr, Progress::Mode::Auto, "row");
    thresholds = data::scene_shadow_thresholds(reader, stripe_rows, [&](int64_t rows) { bar.update(rows); });
  }
  finite.check(in);
  NIMBUS_CHECK(thresholds.with_data > 0, in, ": every pixel is the nodata value ", info.nodata.value_or(0),
               ": nothing to detect");

  // Pass 2: the masks by stripes; their rows wait in `pending` until a row of output tiles is complete
  // (the tiles' size is the scene's, whatever --stripe says).
  const int T = std::min(256, (std::max(H, W) + 15) / 16 * 16);
  data::WriteOptions wo;
  wo.type = data::SampleType::UInt8;
  wo.tile_size = T;
  wo.deflate = apps::compress_deflate(p);
  std::optional<double> mask_nodata;
  if (info.nodata) mask_nodata = kNodataMask;
  data::TiledGeoTiffWriter writer(out, W, H, 1, wo, info.geo, {}, mask_nodata);
  const bool map = p.get_flag("map");
  size_t cloud = 0, shadow = 0, with_data = 0;  // the fractions are of the pixels with data
  std::vector<uint8_t> pending;                 // mask values of rows [written, written + pending / W)
  int written = 0;
  std::vector<float> tile;
  auto write_tile_row = [&](int rows) {
    for (int tx0 = 0; tx0 < W; tx0 += T) {
      const int cols = std::min(T, W - tx0);
      tile.resize(size_t(rows) * size_t(cols));
      for (int y = 0; y < rows; ++y)
        for (int x = 0; x < cols; ++x)
          tile[size_t(y) * size_t(cols) + size_t(x)] = pending[size_t(y) * size_t(W) + size_t(tx0 + x)];
      writer.write_tile(tx0 / T, written / T, tile.data());
    }
    pending.erase(pending.begin(), pending.begin() + ptrdiff_t(size_t(rows) * size_t(W)));
    written += rows;
  };
  data::CloudDetectorOptions o;
  o.cloud_threshold = threshold;
  {
    Progress bar("cloud_mask detect", H, stderr, Progress::Mode::Auto, "row");
    data::scene_masks(reader, thresholds, o, stripe_rows, [&](const data::SceneStripe& s) {
      const size_t n = size_t(s.rows) * size_t(W);
      for (size_t i = 0; i < n; ++i) {
        if (s.valid && !s.valid[i]) {
          pending.push_back(uint8_t(kNodataMask));
          continue;
        }
        pending.push_back(s.cloud[i] ? 1 : (s.shadow[i] ? (map ? 2 : 1) : 0));
        cloud += s.cloud[i], shadow += !s.cloud[i] && s.shadow[i], ++with_data;
      }
      while (pending.size() >= size_t(T) * size_t(W)) write_tile_row(T);
      if (s.y0 + s.rows == H && !pending.empty()) write_tile_row(int(pending.size() / size_t(W)));
      bar.update(s.y0 + s.rows);
    });
  }
  writer.finish();
  const size_t hw = size_t(W) * size_t(H);
  const double fc = double(cloud) / double(with_data), fs = double(shadow) / double(with_data);
  std::printf("%s: %dx%d, cloud %.4f, shadow %.4f, masked %.4f", in.c_str(), W, H, fc, fs, fc + fs);
  if (info.nodata) std::printf(" (of the %zu pixels with data; nodata: %zu)", with_data, hw - with_data);
  std::printf(" -> %s\n", out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return nimbus::cli::guarded_main("cloud_mask", run, argc, argv); }
