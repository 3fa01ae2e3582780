// remove_clouds: DSen2-CR cloud removal of Sentinel-2 GeoTIFFs of any size.
//
//   remove_clouds --weights dsen2cr.safetensors --s2 cloudy.tif [--s1 sar.tif] --out clear.tif
//   remove_clouds --weights ... --data SEN12MS-CR/ --split test --out-dir DIR
// Input: 13-band S2 DN (B1..B8, B8A, B9..B12) and, for a SAR model, the
// 2-band S1 (VV, VH dB) of the same grid. Normalised as in training (§4),
// run in overlapping tiles blended with linear ramps (apps/common/tiling.h;
// exact up to float rounding when the overlap covers the receptive field),
// written as uint16 DN (x 2000, rounded, clamped to 0..65535) with the
// input's georeferencing, atomically. Band order: the input's is what the file
// says (apps/common/band_order.h; --bands overrides), moved to DSen2-CR's
// SEN12MS order; the output is in SEN12MS order and names its bands in GDAL
// band descriptions (B1, ..., B8A, ..., B12), so readers need not guess. Folder mode writes one file per
// triplet of the split: DIR/<cloudy S2 file name>.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "apps/common/band_order.h"
#include "apps/common/cloud_removal.h"
#include "apps/common/device.h"
#include "apps/common/progress.h"
#include "data/geotiff.h"
#include "data/normalize.h"
#include "data/sen12mscr.h"
#include "models/model_io.h"

using namespace nimbus;
namespace fs = std::filesystem;

namespace {

// Reads, checks, normalises, removes clouds, writes. s1_path may be empty.
void process(models::DSen2CR& net, const std::string& weights, const std::string& s2_path,
             const std::string& s1_path, const std::string& out_path, const apps::TileOptions& to,
             apps::FileBands& file_bands) {
  data::Raster s2 = data::read_geotiff(s2_path);
  NIMBUS_CHECK(s2.bands == models::kS2Bands, s2_path, ": has ", s2.bands, " bands; DSen2-CR needs ", models::kS2Bands,
               "-band Sentinel-2 (B1..B8, B8A, B9..B12)");
  const data::BandList sen12ms = data::sen12ms_bands();
  s2.data = data::reorder_bands(std::move(s2.data), size_t(s2.width) * size_t(s2.height),
                                file_bands.of(s2_path, s2.band_names, s2.bands), sen12ms, s2_path);
  s2.band_names.clear();
  for (int b : sen12ms) s2.band_names.emplace_back(data::kS2BandNames[size_t(b)]);
  const bool sar = net.config().sar;
  NIMBUS_CHECK(!sar || !s1_path.empty(), weights, ": the model (", net.config().str(),
               ") needs S1 SAR input: give --s1 FILE for ", s2_path);
  data::Raster s1;
  if (sar) {
    s1 = data::read_geotiff(s1_path);
    NIMBUS_CHECK(s1.bands == models::kS1Bands, s1_path, ": has ", s1.bands, " bands; S1 SAR needs 2 (VV, VH in dB)");
    NIMBUS_CHECK(s1.width == s2.width && s1.height == s2.height, s1_path, " is ", s1.width, "x", s1.height, " but ",
                 s2_path, " is ", s2.width, "x", s2.height);
    data::fill_nan_with_mean(s1.data.data(), s1.data.size());
  }
  data::fill_nan_with_mean(s2.data.data(), s2.data.size());  // integer files have none; float ones may
  // Scaled to the model's domain and back on its device, tile by tile (DSen2CR::forward_dn).
  s2.data = apps::remove_clouds_tiled(net, s2.data.data(), sar ? s1.data.data() : nullptr, s2.height, s2.width, to);
  data::WriteOptions wo;
  wo.type = data::SampleType::UInt16;
  const fs::path parent = fs::path(out_path).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
  data::write_geotiff(out_path, s2, wo);  // s2.geo: the input's georeferencing
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
  p.add_string("data", "", "folder mode: SEN12MS-CR root (or triplet list CSV); every triplet of --split", "PATH");
  p.add_choice("split", "test", {"train", "val", "test"}, "folder mode: which benchmark split to process");
  p.add_string("out-dir", "", "folder mode: output folder, one <cloudy S2 file name> per triplet", "DIR");
  p.add_int("tile", 256, "tile side in pixels; images up to this size run in one piece").range(16, 8192);
  p.add_int("overlap", -1, "tile overlap in pixels (-1: 2 x receptive radius + 32, e.g. 100 for 16 blocks)").range(-1, 4096);
  p.add_int("batch-size", 4, "tiles per forward pass").range(1, 4096);
  apps::add_bands_option(p);
  cli::add_common_options(p);
  apps::add_precision_option(p);
  p.parse_or_exit(argc, argv);
  const std::string weights = p.get_string("weights"), s2 = p.get_string("s2"), root = p.get_string("data");
  const bool folder = !root.empty();
  if (weights.empty()) throw cli::UsageError("--weights FILE is required");
  if (folder && (!s2.empty() || !p.get_string("out").empty()))
    throw cli::UsageError("use either --s2/--s1/--out (one image) or --data/--split/--out-dir (a split)");
  if (!folder && (s2.empty() || p.get_string("out").empty()))
    throw cli::UsageError("--s2 FILE and --out FILE are required (or --data DIR --out-dir DIR)");
  if (folder && p.get_string("out-dir").empty()) throw cli::UsageError("--out-dir DIR is required with --data");
  const cli::CommonOptions common = apps::setup_device(p);
  models::LoadedModel lm = models::load_model(weights);
  NIMBUS_CHECK(lm.model.dsen2cr, weights, ": holds ", lm.model.config.str(), ", not a DSen2-CR model");
  models::DSen2CR& net = *lm.model.dsen2cr;
  net.to(common.device);
  apps::TileOptions to;
  to.tile = int(p.get_int("tile"));
  to.overlap = int(p.get_int("overlap"));
  to.batch = int(p.get_int("batch-size"));
  to.device = common.device;
  apps::FileBands file_bands(p.get_string("bands"), "remove_clouds");

  if (!folder) {
    const std::string s1 = p.get_string("s1");
    cli::refuse_output_over_input("--out", p.get_string("out"), {{"--s2", s2}, {"--s1", s1}, {"--weights", weights}});
    if (!net.config().sar && !s1.empty())
      std::fprintf(stderr, "remove_clouds: the model has no SAR input; ignoring --s1 %s\n", s1.c_str());
    // One image: the bar counts tiles.
    std::unique_ptr<Progress> bar;
    to.on_tiles = [&bar](size_t done, size_t total) {
      if (!bar) bar = std::make_unique<Progress>("remove_clouds", int64_t(total), stderr, Progress::Mode::Auto, "tile");
      bar->update(int64_t(done));
    };
    process(net, weights, s2, net.config().sar ? s1 : "", p.get_string("out"), to, file_bands);
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
  const std::vector<data::Sen12mscrTriplet> ts = index.split(split);
  NIMBUS_CHECK(!ts.empty(), root, ": no triplets in the ", split_name, " split");
  const std::string out_dir = p.get_string("out-dir");
  Progress bar("remove_clouds " + split_name, int64_t(ts.size()), stderr, Progress::Mode::Auto, "img");
  for (size_t i = 0; i < ts.size(); ++i) {
    process(net, weights, ts[i].s2_cloudy, net.config().sar ? ts[i].s1 : "",
            out_dir + "/" + fs::path(ts[i].s2_cloudy).filename().string(), to, file_bands);
    bar.update(int64_t(i + 1));
  }
  bar.finish();
  std::printf("remove_clouds: %zu %s triplets -> %s\n", ts.size(), split_name.c_str(), out_dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return nimbus::cli::guarded_main("remove_clouds", run, argc, argv); }
