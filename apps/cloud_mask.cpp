// cloud_mask: the DSen2-CR cloud / cloud-shadow mask of a Sentinel-2 GeoTIFF.
//
//   cloud_mask --s2 cloudy.tif --out mask.tif [--threshold 0.2] [--map]
// reads a 13-band S2 image (raw DN) in the band order it says (apps/common/band_order.h: --bands, its
// band descriptions or its dataset layout; EuroSAT files keep B8A last) and puts it in the
// detector's order (B1..B8, B8A, B9..B12), runs the §3
// detector on the whole image and writes a uint8 GeoTIFF with the input's
// georeferencing: 1 = cloud or shadow, 0 = clear (--map: 1 cloud, 2 shadow,
// 0 clear); 255 where the input is its GDAL nodata value in every band (the mask's nodata value then;
// the detector's shadow thresholds leave those pixels out). Prints the cloud and shadow fractions of
// the pixels with data; progress bars on stderr while it reads and detects. Written atomically (temp
// file + rename). Bad input (missing file, wrong band count) -> exit 1.
#include <cmath>
#include <cstdio>
#include <memory>

#include "apps/common/band_order.h"
#include "apps/common/cli.h"
#include "apps/common/progress.h"
#include "data/sentinel2.h"
#include "data/cloud_detector.h"
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
  p.add_double("threshold", 0.2, "cloud score threshold (DSen2-CR: 0.2)").range(0, 1);
  p.add_flag("map", "write 1 cloud / 2 shadow / 0 clear instead of the 0/1 loss mask");
  apps::add_bands_option(p);
  p.parse_or_exit(argc, argv);
  const std::string in = p.get_string("s2"), out = p.get_string("out");
  if (in.empty() || out.empty()) throw cli::UsageError("--s2 FILE and --out FILE are required");
  cli::refuse_output_over_input("--out", out, {{"--s2", in}});
  cli::prepare_output_file("--out", out);
  const double threshold = p.get_double("threshold");
  if (!(threshold > 0 && threshold <= 1))
    throw cli::UsageError(str("--threshold must be in (0, 1], got ", threshold));
  // A whole granule (10980 x 10980) takes minutes on 2 cores: a bar over the rows read, then one over
  // the detector's two passes (its shadow thresholds are whole-image statistics: it cannot stream).
  const data::TiffInfo info = data::read_tiff_info(in);
  NIMBUS_CHECK(info.bands == data::kS2Bands, in, " has ", info.bands,
               " bands; the detector needs a 13-band Sentinel-2 image (B1..B8, B8A, B9..B12)");
  data::Raster s2;
  {
    std::unique_ptr<Progress> bar;  // made at the first call: the total is the height, or twice it
    s2 = data::read_geotiff(in, [&](int64_t done, int64_t total) {
      if (!bar) bar = std::make_unique<Progress>("cloud_mask read", total, stderr, Progress::Mode::Auto, "row");
      bar->update(done);
    });
  }
  // Pixels that are the file's nodata value in every band (a swath's edge) have no data: the detector's
  // thresholds leave them out and the mask says 255 (nodata) there. Their values are zeroed first, so a
  // NaN nodata value is not taken for a bad pixel below.
  const size_t hw = size_t(s2.width) * size_t(s2.height);
  std::vector<uint8_t> valid;
  if (s2.nodata) {
    valid.assign(hw, 0);
    size_t with_data = 0;
    // A NaN nodata value: NaN in any band is no data (a swath's edge differs a little per band); another
    // value must hold in every band (0 DN can be a real value in one band).
    const bool nan_nodata = std::isnan(*s2.nodata);
    for (size_t q = 0; q < hw; ++q) {
      int nodata_bands = 0;
      for (int c = 0; c < s2.bands; ++c) nodata_bands += data::is_nodata(s2.data[size_t(c) * hw + q], s2.nodata);
      valid[q] = nan_nodata ? nodata_bands == 0 : nodata_bands < s2.bands;
      with_data += valid[q];
    }
    NIMBUS_CHECK(with_data > 0, in, ": every pixel is the nodata value ", *s2.nodata, ": nothing to detect");
    for (size_t q = 0; q < hw; ++q)
      if (!valid[q])
        for (int c = 0; c < s2.bands; ++c) s2.data[size_t(c) * hw + q] = 0.f;
  }
  data::check_finite(s2, in);  // one NaN pixel once changed the whole tile's shadow fraction
  // The detector reads bands by position (B10 and B11 at 10 and 11): a file in another order (EuroSAT's,
  // B8A last) is put in SEN12MS order first.
  apps::FileBands file_bands(p.get_string("bands"), "cloud_mask");
  const data::BandList bands = file_bands.of(in, s2.band_names, s2.bands);
  s2.data = data::reorder_bands(std::move(s2.data), size_t(s2.width) * size_t(s2.height), bands,
                                data::sen12ms_bands(), in);
  data::CloudDetectorOptions o;
  o.cloud_threshold = threshold;
  o.valid = valid.empty() ? nullptr : valid.data();
  data::CloudShadowMasks m;
  {
    Progress bar("cloud_mask detect", 2, stderr, Progress::Mode::Auto, "pass");
    o.on_pass = [&](int done, int) { bar.update(done); };
    m = data::detect_clouds(s2, o);
  }

  data::Raster mask;
  mask.width = s2.width;
  mask.height = s2.height;
  mask.bands = 1;
  mask.type = data::SampleType::UInt8;
  mask.geo = s2.geo;
  mask.data.resize(m.cloud.size());
  const bool map = p.get_flag("map");
  size_t cloud = 0, shadow = 0, with_data = 0;  // the fractions are of the pixels with data
  for (size_t i = 0; i < mask.data.size(); ++i) {
    if (!valid.empty() && !valid[i]) {
      mask.data[i] = kNodataMask;
      continue;
    }
    mask.data[i] = m.cloud[i] ? 1.f : (m.shadow[i] ? (map ? 2.f : 1.f) : 0.f);
    cloud += m.cloud[i], shadow += !m.cloud[i] && m.shadow[i], ++with_data;
  }
  if (!valid.empty()) mask.nodata = kNodataMask;
  data::WriteOptions wo;
  wo.type = data::SampleType::UInt8;
  data::write_geotiff(out, mask, wo);
  const double fc = double(cloud) / double(with_data), fs = double(shadow) / double(with_data);
  std::printf("%s: %dx%d, cloud %.4f, shadow %.4f, masked %.4f", in.c_str(), s2.width, s2.height, fc, fs, fc + fs);
  if (!valid.empty()) std::printf(" (of the %zu pixels with data; nodata: %zu)", with_data, hw - with_data);
  std::printf(" -> %s\n", out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return nimbus::cli::guarded_main("cloud_mask", run, argc, argv); }
