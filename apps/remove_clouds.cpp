// remove_clouds: DSen2-CR cloud removal of Sentinel-2 GeoTIFFs of any size.
//
//   remove_clouds --weights dsen2cr.safetensors --s2 cloudy.tif [--s1 sar.tif] --out clear.tif
//   remove_clouds --weights ... --data SEN12MS-CR/ --split test --out-dir DIR
// Input: 13-band S2 DN and, for a SAR model, the 2-band S1 (VV, VH dB) of the
// same grid. Normalised as in training (§4), run in overlapping tiles blended
// with linear ramps (apps/common/tiling.h; exact up to float rounding when the
// overlap covers the receptive field), written as a tiled uint16 GeoTIFF (DN,
// rounded, clamped to 0..65535) with the input's georeferencing, atomically.
// Whole granules (10980 x 10980) fit: the input is read by windows and the
// output written by tiles, in stripes of --stripe columns
// (apps/common/cloud_removal.h), so memory depends on the tile and stripe sizes,
// not on the image's; the result is the same bits as a whole-image run.
// Band order: the input's is what the file says (apps/common/band_order.h;
// --bands overrides), moved to DSen2-CR's SEN12MS order; the output is in
// SEN12MS order and names its bands in GDAL band descriptions.
// Nodata: a pixel that is the input's GDAL nodata value in every band is nodata in the output (that
// value when uint16 holds it, else 0), and the output carries the tag; a pixel with data whose value
// would round to the nodata value is moved 1 DN off it.
// Folder mode writes one file per triplet of the split: DIR/<cloudy S2 file name>.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>

#include "apps/common/band_order.h"
#include "apps/common/cloud_removal.h"
#include "apps/common/device.h"
#include "apps/common/geotiff_output.h"
#include "apps/common/progress.h"
#include "data/geotiff.h"
#include "data/normalize.h"
#include "data/sen12mscr.h"
#include "models/model_io.h"

using namespace nimbus;
namespace fs = std::filesystem;

namespace {

// The value fill_nan_with_mean would put in place of NaN in a whole float file (the mean of its
// other values, in double), found by reading it a block of rows at a time; nullopt when it has no
// NaN (integer files never do, and are not read), NaN when it has nothing else. The sum runs in fill_nan_with_mean's order (band
// by band, row by row), one pass per band, so the value is the same bits.
std::optional<float> nan_fill_value(data::TiffReader& file) {
  const data::TiffInfo& info = file.info();
  if (!data::is_floating(info.type)) return std::nullopt;
  constexpr int kRows = 256;
  auto blocks = [&](const std::function<void(const data::Raster&)>& visit) {
    for (int y0 = 0; y0 < info.height; y0 += kRows)
      visit(file.read(data::Window{0, y0, info.width, std::min(kRows, info.height - y0)}));
  };
  bool any_nan = false;
  blocks([&](const data::Raster& r) { any_nan = any_nan || std::any_of(r.data.begin(), r.data.end(), [](float v) { return std::isnan(v); }); });
  if (!any_nan) return std::nullopt;
  double sum = 0;
  size_t count = 0;
  for (int b = 0; b < info.bands; ++b)
    blocks([&](const data::Raster& r) {
      const float* p = r.band(b);
      for (size_t i = 0; i < size_t(r.width) * size_t(r.height); ++i)
        if (!std::isnan(p[i])) sum += double(p[i]), ++count;
    });
  return count ? float(sum / double(count)) : std::nanf("");
}

// Output tiles of the GeoTIFF: 256 (GDAL's default block), smaller for a small image.
int output_tile(int height, int width) { return std::min(256, (std::max(height, width) + 15) / 16 * 16); }

// Reads by windows, checks, removes clouds, writes a tiled GeoTIFF by tiles: memory depends on the
// tile and stripe sizes, not on the image's. s1_path may be empty.
void process(models::DSen2CR& net, const std::string& weights, const std::string& s2_path,
             const std::string& s1_path, const std::string& out_path, apps::TileOptions to,
             apps::FileBands& file_bands, bool deflate) {
  // Every window through one reader per file (a file in one compressed strip is decoded by rows).
  data::TiffReader r2(s2_path);
  std::optional<data::TiffReader> r1;
  const data::TiffInfo i2 = r2.info();
  NIMBUS_CHECK(i2.bands == models::kS2Bands, s2_path, ": has ", i2.bands, " bands; DSen2-CR needs ", models::kS2Bands,
               "-band Sentinel-2 (B1..B8, B8A, B9..B12)");
  const int H = i2.height, W = i2.width;
  const data::BandList sen12ms = data::sen12ms_bands(), bands = file_bands.of(s2_path, i2.band_names, i2.bands);
  const bool sar = net.config().sar;
  NIMBUS_CHECK(!sar || !s1_path.empty(), weights, ": the model (", net.config().str(),
               ") needs S1 SAR input: give --s1 FILE for ", s2_path);
  data::TiffInfo i1;
  if (sar) {
    r1.emplace(s1_path);
    i1 = r1->info();
    NIMBUS_CHECK(i1.bands == models::kS1Bands, s1_path, ": has ", i1.bands, " bands; S1 SAR needs 2 (VV, VH in dB)");
    data::check_s1_band_order(s1_path, i1.band_names);
    NIMBUS_CHECK(i1.width == W && i1.height == H, s1_path, " is ", i1.width, "x", i1.height, " but ", s2_path, " is ",
                 W, "x", H);
    const std::string grid = data::grid_mismatch(i2.geo, i1.geo);
    NIMBUS_CHECK(grid.empty(), s1_path, " and ", s2_path, " are not on the same grid (", grid,
                 "): the SAR must be co-registered with the optical image");
  }
  // NaN is filled with the whole file's mean, as DSen2-CR does per patch (integer files have none). A
  // file of nothing but NaN: S2 0 (fill_nan_with_mean's), S1 its bands' clip floors (fill_s1_nan's).
  const std::optional<float> fill2 = nan_fill_value(r2), fill1 = sar ? nan_fill_value(*r1) : std::nullopt;
  auto fill = [](std::vector<float>& v, std::optional<float> with) {
    if (with)
      for (float& x : v)
        if (std::isnan(x)) x = std::isnan(*with) ? 0.f : *with;
  };

  const int T = output_tile(H, W);
  data::WriteOptions wo;
  wo.type = data::SampleType::UInt16;
  wo.tile_size = T;
  wo.deflate = deflate;
  std::vector<std::string> names;
  for (int b : sen12ms) names.emplace_back(data::kS2BandNames[size_t(b)]);
  const fs::path parent = fs::path(out_path).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
  // A pixel that is nodata in every band of the input (a swath's edge) is nodata in the output too, with
  // the input's value when uint16 holds it, else 0 (Sentinel-2's own nodata DN); the model's output
  // there is not data.
  std::optional<double> out_nodata;
  if (i2.nodata)
    out_nodata = *i2.nodata >= 0 && *i2.nodata <= 65535 && *i2.nodata == std::floor(*i2.nodata) ? *i2.nodata : 0.0;
  data::TiledGeoTiffWriter out(out_path, W, H, models::kS2Bands, wo, i2.geo, names, out_nodata);  // the input's grid

  // Which pixels of the input are nodata in every band (1), for the rows of the current stripe's windows
  // that are not written yet: marked as the model's windows read them (every output pixel lies in a
  // window read before its rows are written), dropped once written, so it stays a window's size.
  std::vector<uint8_t> no_data;  // rows [nd_y0, nd_y0 + no_data.size() / nd_w), columns [nd_x0, nd_x0 + nd_w)
  int nd_x0 = -1, nd_w = 0, nd_y0 = 0;
  apps::TileIO io;
  io.read = [&](int x0, int y0, int w, int h, float* s2, float* s1) {
    const data::Window win{x0, y0, w, h};
    data::Raster in = r2.read(win);
    if (out_nodata) {
      if (x0 != nd_x0 || w != nd_w) nd_x0 = x0, nd_w = w, nd_y0 = y0, no_data.clear();  // a new stripe
      NIMBUS_CHECK(y0 >= nd_y0, "remove_clouds: internal: window at row ", y0, " above the nodata rows kept");
      no_data.resize(std::max(no_data.size(), size_t(y0 + h - nd_y0) * size_t(w)));
      const size_t n = size_t(w) * size_t(h), at = size_t(y0 - nd_y0) * size_t(w);
      for (size_t q = 0; q < n; ++q) {
        bool all = true;
        for (int c = 0; c < in.bands && all; ++c) all = data::is_nodata(in.data[size_t(c) * n + q], i2.nodata);
        no_data[at + q] = all;
      }
    }
    std::vector<float> v = data::reorder_bands(std::move(in.data), size_t(w) * size_t(h), bands, sen12ms, s2_path);
    fill(v, fill2);
    std::copy(v.begin(), v.end(), s2);
    if (s1) {
      std::vector<float> r = r1->read(win).data;
      data::check_s1_in_db(s1_path, r.data(), r.size());  // window by window: a granule is never held whole
      if (fill1 && std::isnan(*fill1)) data::fill_s1_nan(r.data(), r.size() / 2);
      else fill(r, fill1);
      std::copy(r.begin(), r.end(), s1);
    }
  };
  // Finished rows arrive stripe by stripe, top to bottom; they wait here until a row of output tiles
  // is complete. Stripes are whole output tiles wide (to.stripe is a multiple of T), so each output
  // tile lies in one stripe.
  int sx0 = -1, sw = 0, py0 = 0, py1 = 0;
  std::vector<std::vector<float>> pending(models::kS2Bands);  // per band: rows [py0, py1) x sw
  std::vector<float> tile;
  auto flush = [&](bool all) {
    while (py1 > py0 && (py1 - py0 >= T || all)) {
      const int rows = std::min(T, py1 - py0);
      for (int tx0 = sx0; tx0 < sx0 + sw; tx0 += T) {
        const int cols = std::min(T, sx0 + sw - tx0);
        tile.resize(size_t(models::kS2Bands) * size_t(rows) * size_t(cols));
        for (int c = 0; c < models::kS2Bands; ++c)
          for (int y = 0; y < rows; ++y)
            std::copy_n(pending[size_t(c)].data() + size_t(y) * size_t(sw) + size_t(tx0 - sx0), size_t(cols),
                        tile.data() + (size_t(c) * size_t(rows) + size_t(y)) * size_t(cols));
        if (out_nodata) {  // the input's nodata pixels under this tile (no_data, marked by the reads)
          const size_t n = size_t(rows) * size_t(cols);
          const float nd = float(*out_nodata);
          NIMBUS_CHECK(py0 >= nd_y0 && tx0 >= nd_x0 && tx0 + cols <= nd_x0 + nd_w &&
                           size_t(py0 + rows - nd_y0) * size_t(nd_w) <= no_data.size(),
                       "remove_clouds: internal: tile (", tx0, ", ", py0, ") outside the windows read");
          for (size_t q = 0; q < n; ++q) {
            const bool all = no_data[size_t(py0 - nd_y0 + int(q / size_t(cols))) * size_t(nd_w) + size_t(tx0 - nd_x0) +
                                     q % size_t(cols)];
            for (int c = 0; c < models::kS2Bands; ++c) {
              float& v = tile[size_t(c) * n + q];
              // A pixel with data must not read as nodata once rounded (GDAL masks per band): 1 DN off.
              if (all) v = nd;
              else if (std::lround(std::clamp(v, 0.f, 65535.f)) == std::lround(nd)) v = nd == 0.f ? 1.f : nd - 1.f;
            }
          }
        }
        out.write_tile(tx0 / T, py0 / T, tile.data());
      }
      for (auto& p : pending) p.erase(p.begin(), p.begin() + ptrdiff_t(size_t(rows) * size_t(sw)));
      py0 += rows;
      if (out_nodata && py0 > nd_y0) {  // rows written: their nodata bits are not needed again
        const size_t drop = std::min(no_data.size(), size_t(py0 - nd_y0) * size_t(nd_w));
        no_data.erase(no_data.begin(), no_data.begin() + ptrdiff_t(drop));
        nd_y0 = py0;
      }
    }
  };
  io.write = [&](int x0, int y0, int w, int h, const float* dn) {
    if (x0 != sx0) {  // a new stripe
      NIMBUS_CHECK(py0 == py1, "remove_clouds: internal: stripe at column ", sx0, " left rows unwritten");
      sx0 = x0, sw = w, py0 = py1 = 0;
    }
    NIMBUS_CHECK(y0 == py1 && w == sw, "remove_clouds: internal: rows out of order");
    for (int c = 0; c < models::kS2Bands; ++c)
      pending[size_t(c)].insert(pending[size_t(c)].end(), dn + size_t(c) * size_t(h) * size_t(w),
                                dn + size_t(c + 1) * size_t(h) * size_t(w));
    py1 += h;
    flush(py1 == H);
  };
  to.stripe = to.stripe <= 0 ? 0 : (to.stripe + T - 1) / T * T;
  apps::remove_clouds_streamed(net, H, W, io, to);
  out.finish();
}

int run(int argc, char** argv) {
  cli::Parser p("remove_clouds",
                "Remove clouds from Sentinel-2 GeoTIFFs with a trained DSen2-CR model; any image size (overlapping "
                "tiles, blended without seams); writes uint16 DN GeoTIFFs with the input's georeferencing.");
  p.add_string("weights", "", "DSen2-CR checkpoint (train_dsen2cr's, or PyTorch-named safetensors)", "FILE");
  p.add_string("s2", "", "single-image mode: cloudy Sentinel-2 GeoTIFF, 13 bands DN (B1..B8, B8A, B9..B12)", "FILE");
  p.add_string("s1", "", "single-image mode: Sentinel-1 GeoTIFF (VV, VH dB) on the same grid; required by SAR models",
               "FILE");
  p.add_string("out", "", "single-image mode: output GeoTIFF (uint16 DN)", "FILE");
  p.add_string("data", "", str("folder mode: SEN12MS-CR root (or ", data::kTripletListHelp, "); every triplet of --split"),
               "PATH");
  p.add_choice("split", "test", {"train", "val", "test", "all"},
               "folder mode: which benchmark split (by ROI) to process; all = every triplet (as cloud_impact)");
  p.add_string("out-dir", "", "folder mode: output folder, one <cloudy S2 file name> per triplet", "DIR");
  p.add_int("tile", 256, "tile side in pixels; images up to this size run in one piece").range(16, 8192);
  p.add_int("overlap", -1, "tile overlap in pixels, at most half of --tile (-1: 2 x receptive radius + 32, e.g. 100 "
            "for 16 blocks, at most half a tile)").range(-1, 4096);
  p.add_int("batch-size", 0,
            "tiles per forward pass (0: 1 on the CPU, where more only adds memory, about 180 MiB per 256x256 tile "
            "of the demo model; 4 on a GPU, where it saves launches)")
      .range(0, 4096);
  p.add_int("stripe", 2048,
            "columns blended at once: memory grows with (stripe + 2 tiles) x tile, not with the image; tiles on a "
            "stripe's edge run for both stripes (0: the whole width)")
      .range(0, 1 << 20);
  apps::add_bands_option(p);
  apps::add_compress_option(p);
  cli::add_common_options(p);
  apps::add_precision_option(p);
  p.parse_or_exit(argc, argv);
  const bool deflate = apps::compress_deflate(p);
  const std::string weights = p.get_string("weights"), s2 = p.get_string("s2"), root = p.get_string("data");
  const bool folder = !root.empty();
  if (weights.empty()) throw cli::UsageError("--weights FILE is required");
  // An option of the other mode would be ignored: refused, so that a typo'd run is not taken for the intended one.
  if (folder && (!s2.empty() || p.given("s1") || !p.get_string("out").empty()))
    throw cli::UsageError("use either --s2/--s1/--out (one image) or --data/--split/--out-dir (a split)");
  if (!folder && (p.given("split") || p.given("out-dir")))
    throw cli::UsageError("--split and --out-dir go with --data DIR (a split); one image takes --s2/--s1/--out");
  if (!folder && (s2.empty() || p.get_string("out").empty()))
    throw cli::UsageError("--s2 FILE and --out FILE are required (or --data DIR --out-dir DIR)");
  if (folder && p.get_string("out-dir").empty()) throw cli::UsageError("--out-dir DIR is required with --data");
  // Tiles blend over their overlap (apps/common/tiling.h): at least one pixel, and at most half a tile
  // (more computes every pixel more than twice each way: --overlap 63 at --tile 64 steps by one pixel).
  if (p.get_int("overlap") == 0 || p.get_int("overlap") > p.get_int("tile") / 2)
    throw cli::UsageError(str("--overlap ", p.get_int("overlap"), " must be -1 (the default) or in [1, ",
                              p.get_int("tile") / 2, "] (half of --tile ", p.get_int("tile"),
                              "): neighbouring tiles blend over it"));
  const cli::CommonOptions common = apps::setup_device(p);
  models::LoadedModel lm = models::load_model(weights);
  NIMBUS_CHECK(lm.model.dsen2cr, weights, ": holds ", lm.model.config.str(), ", not a DSen2-CR model");
  models::DSen2CR& net = *lm.model.dsen2cr;
  net.to(common.device);
  apps::TileOptions to;
  to.tile = int(p.get_int("tile"));
  to.overlap = int(p.get_int("overlap"));
  {  // Exact tiling needs a margin of the model's receptive radius; say when the tiles are too small for it.
    const int overlap = to.overlap >= 0 ? to.overlap : apps::default_overlap(net.config(), to.tile);
    const int radius = apps::receptive_radius(net.config()), margin = apps::tile_margin(net.config(), overlap);
    if (margin < radius)
      std::fprintf(stderr,
                   "remove_clouds: note: --tile %d with an overlap of %d px cuts tiles with a margin of %d px, below "
                   "the model's receptive radius %d: tiles are blended, not exact (--tile %d and the default "
                   "overlap are exact)\n",
                   to.tile, overlap, margin, radius, 2 * (2 * radius + 1));
  }
  to.batch = p.get_int("batch-size") > 0 ? int(p.get_int("batch-size")) : common.device == Device::CPU ? 1 : 4;
  to.stripe = int(p.get_int("stripe"));
  to.device = common.device;
  apps::FileBands file_bands(p.get_string("bands"), "remove_clouds");

  if (!folder) {
    const std::string s1 = p.get_string("s1");
    cli::refuse_output_over_input("--out", p.get_string("out"), {{"--s2", s2}, {"--s1", s1}, {"--weights", weights}});
    cli::prepare_output_file("--out", p.get_string("out"), /*stream_ok=*/false);  // a GeoTIFF
    if (!net.config().sar && !s1.empty())
      std::fprintf(stderr, "remove_clouds: the model has no SAR input; ignoring --s1 %s\n", s1.c_str());
    // One image: the bar counts tiles.
    std::unique_ptr<Progress> bar;
    to.on_tiles = [&bar](size_t done, size_t total) {
      if (!bar) bar = std::make_unique<Progress>("remove_clouds", int64_t(total), stderr, Progress::Mode::Auto, "tile");
      bar->update(int64_t(done));
    };
    process(net, weights, s2, net.config().sar ? s1 : "", p.get_string("out"), to, file_bands, deflate);
    if (bar) bar->finish();
    std::printf("remove_clouds: %s -> %s\n", s2.c_str(), p.get_string("out").c_str());
    return 0;
  }
  const bool csv = root.size() > 4 && root.substr(root.size() - 4) == ".csv";
  const data::Sen12mscrIndex index = csv ? data::read_sen12mscr_list(root) : data::scan_sen12mscr(root);
  const std::string split_name = p.get_string("split");
  const data::Split split = split_name == "train" ? data::Split::Train
                            : split_name == "val" ? data::Split::Val
                                                  : data::Split::Test;
  const std::vector<data::Sen12mscrTriplet> ts = split_name == "all" ? index.triplets : index.split(split);
  NIMBUS_CHECK(!ts.empty(), root, ": no triplets in the ", split_name, " split",
               split_name == "all" ? "" : " (--split all takes every triplet, whatever its ROI)");
  const std::string out_dir = p.get_string("out-dir");
  // Before any work: no output may land on an input of the split (--out-dir the cloudy folder, say).
  std::error_code ec;
  if (fs::exists(out_dir, ec) && !fs::is_directory(out_dir, ec))
    throw cli::UsageError(str("--out-dir ", out_dir, " is not a folder"));
  for (const data::Sen12mscrTriplet& t : ts) {
    const std::string out = out_dir + "/" + fs::path(t.s2_cloudy).filename().string();
    cli::refuse_output_over_input("--out-dir", out, {{"a cloudy image", t.s2_cloudy}, {"a SAR image", t.s1},
                                                     {"a cloud-free image", t.s2}, {"--weights", weights}});
  }
  // Then a folder we can make (a refusal above leaves none behind).
  fs::create_directories(out_dir, ec);
  NIMBUS_CHECK(!ec, "--out-dir ", out_dir, ": cannot create the folder: ", ec.message());
  Progress bar("remove_clouds " + split_name, int64_t(ts.size()), stderr, Progress::Mode::Auto, "img");
  for (size_t i = 0; i < ts.size(); ++i) {
    process(net, weights, ts[i].s2_cloudy, net.config().sar ? ts[i].s1 : "",
            out_dir + "/" + fs::path(ts[i].s2_cloudy).filename().string(), to, file_bands, deflate);
    bar.update(int64_t(i + 1));
  }
  bar.finish();
  std::printf("remove_clouds: %zu %s triplets -> %s\n", ts.size(), split_name.c_str(), out_dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return nimbus::cli::guarded_main("remove_clouds", run, argc, argv); }
