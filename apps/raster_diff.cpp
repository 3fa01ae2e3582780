// raster_diff: how far apart two GeoTIFFs of the same grid are, pixel by pixel.
//
//   raster_diff A.tif B.tif [--max D] [--case NAME]
// reads both (any type our reader takes: uint8/16, int16, float32; stripped or tiled), requires the
// same width, height and band count, and prints one JSON line: the largest absolute difference, where
// it is (at_band counts from 1 as GDAL's bands do, at_row and at_col from 0 as pixel offsets do; the
// first value when nothing differs), how many values differ at all, and whether the largest is at most
// --max. Exit 0
// when it is, 1 when it is not or when a value is NaN in one file and not the other (a NaN in both
// places counts as equal), 2 on usage errors, 3 when the two cannot be compared (a file unreadable,
// another size or band count), so that a script tells "differ" from "could not look", as with cmp. For comparing one program's output on two devices
// (scripts/gpu_check.sh: remove_clouds on the GPU against the CPU) or two versions of a run; the
// line is a results row of scripts/gpu/results.py when --case is given.
#include <cmath>
#include <cstdio>
#include <string>

#include "apps/common/cli.h"
#include "data/geotiff.h"
#include "engine/io/json.h"

using namespace nimbus;

namespace {

int run(int argc, char** argv) {
  cli::Parser p("raster_diff",
                "Compare two GeoTIFFs of the same size and band count: the largest absolute difference, where it "
                "is, and how many values differ; exit 1 when it exceeds --max, 3 when the files cannot be compared.");
  p.add_positional("rasters", "the two GeoTIFFs to compare");
  p.add_double("max", 0, "largest absolute difference allowed (0: the files' values must be equal)").range(0, 1e30);
  p.add_string("case", "", "name of the comparison, written as the JSON line's \"case\" (scripts/gpu/results.py)",
               "NAME");
  p.parse_or_exit(argc, argv);
  const std::vector<std::string> files = p.positionals();
  if (files.size() != 2) throw cli::UsageError(str("two GeoTIFFs to compare, got ", files.size()));
  data::Raster a, b;
  try {
    a = data::read_geotiff(files[0]), b = data::read_geotiff(files[1]);
    NIMBUS_CHECK(a.width == b.width && a.height == b.height && a.bands == b.bands, files[1], " is ", b.width, "x",
                 b.height, " with ", b.bands, " bands, but ", files[0], " is ", a.width, "x", a.height, " with ",
                 a.bands, " bands");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "raster_diff: cannot compare: %s\n", e.what());
    return 3;
  }
  const size_t plane = size_t(a.width) * size_t(a.height);
  double worst = 0;
  size_t at = 0, differ = 0, nan_mismatch = 0;
  for (size_t i = 0; i < a.data.size(); ++i) {
    const double x = a.data[i], y = b.data[i];
    if (std::isnan(x) || std::isnan(y)) {
      nan_mismatch += std::isnan(x) != std::isnan(y);
      continue;
    }
    const double d = std::fabs(x - y);
    differ += d != 0;
    if (d > worst) worst = d, at = i;
  }
  const double bound = p.get_double("max");
  const bool ok = nan_mismatch == 0 && worst <= bound;
  const size_t pixel = plane ? at % plane : 0;
  std::printf("{\"case\":%s,\"impl\":\"nimbus\",\"ok\":%s,\"max_abs_diff\":%.9g,\"bound_max\":%.9g,"
              "\"at_band\":%zu,\"at_row\":%zu,\"at_col\":%zu,\"values_differing\":%zu,\"values\":%zu,"
              "\"nan_mismatches\":%zu,\"width\":%d,\"height\":%d,\"bands\":%d}\n",
              json::quote(p.get_string("case")).c_str(), ok ? "true" : "false", worst, bound, plane ? at / plane + 1 : 0,
              a.width ? pixel / size_t(a.width) : 0, a.width ? pixel % size_t(a.width) : 0, differ, a.data.size(),
              nan_mismatch, a.width, a.height, a.bands);
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) { return nimbus::cli::guarded_main("raster_diff", run, argc, argv); }
