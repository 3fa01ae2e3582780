// test_gdal_reads.cpp: GDAL, which QGIS and rasterio read through, reads the GeoTIFFs nimbus writes
// as nimbus meant them: every sample type, strips and tiles, uncompressed and Deflate with the
// predictor (--compress deflate), band names and nodata. gdal_translate rewrites each file
// uncompressed in GDAL's own way, and nimbus's reader compares that copy's pixels with what was written
// (the copy is GDAL's reading: a predictor it undid otherwise would show). gdal-bin comes with
// scripts/install_deps.sh --tests (scripts/test.sh).
#include <doctest/doctest.h>

#include "data/geotiff.h"
#include "engine/random.h"
#include "tests/apps/app_runner.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;

TEST_CASE("gdal: reads nimbus's GeoTIFFs pixel for pixel, every sample type, tiled or not, deflated or not") {
  const std::string gdal_translate = on_path("gdal_translate");
  REQUIRE_MESSAGE(!gdal_translate.empty(), "gdal_translate is missing: scripts/install_deps.sh --tests installs gdal-bin");
  TempDir d("gdal_reads");
  Rng rng(3);
  int n = 0;
  for (const data::SampleType type :
       {data::SampleType::UInt8, data::SampleType::UInt16, data::SampleType::Int16, data::SampleType::Float32})
    for (const bool tiled : {false, true})
      for (const bool deflate : {false, true}) {
        CAPTURE(data::sample_type_name(type));
        CAPTURE(tiled);
        CAPTURE(deflate);
        data::Raster r;
        r.width = 37, r.height = 29, r.bands = 3;  // odd: partial tiles and strips
        r.type = type;
        const double hi = type == data::SampleType::UInt8 ? 254 : 30000;
        r.data.resize(size_t(r.bands) * r.width * r.height);
        // A smooth ramp with noise (what the predictor is for), signed values for int16 and float32.
        for (size_t i = 0; i < r.data.size(); ++i) {
          const double v = double(i % size_t(r.width)) * hi / r.width + rng.uniform() * 3;
          r.data[i] = type == data::SampleType::Float32 ? float(v * 0.37 - 50)
                      : type == data::SampleType::Int16 ? float(std::round(v) - 15000)
                                                        : float(std::round(v));
        }
        r.band_names = {"B2", "B3", "B4"};
        r.nodata = 0.0;
        data::WriteOptions o;
        o.type = type;
        o.tiled = tiled;
        o.tile_size = 16;
        o.deflate = deflate;
        const std::string ours = d / ("ours" + std::to_string(n) + ".tif"),
                          theirs = d / ("gdal" + std::to_string(n++) + ".tif");
        data::write_geotiff(ours, r, o);
        const AppResult t = run_program(gdal_translate, {"-q", "-co", "COMPRESS=NONE", ours, theirs});
        REQUIRE_MESSAGE(t.exit_code == 0, t.output);
        const data::TiffInfo info = data::read_tiff_info(theirs);
        CHECK(info.compression == 1);
        CHECK(info.type == type);
        const data::Raster back = data::read_geotiff(theirs);
        check_close(back.data, r.data, 0, 0, "GDAL's copy");
        CHECK(back.band_names == r.band_names);
        CHECK(back.nodata == r.nodata);
      }
}
