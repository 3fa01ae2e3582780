// raster_diff: how far apart two GeoTIFFs of the same grid are, pixel by pixel.
//
//   raster_diff A.tif B.tif [--max D] [--case NAME]
// reads both (any type our reader takes: 8-, 16- and 32-bit integers, float32 and float64, compared as
// the float32 values the reader gives, so below float32's resolution float64 files and 32-bit integers
// past 2^24 compare equal; stripped or tiled), requires the
// same width, height and band count, and prints one JSON line: the largest absolute difference, where
// it is (at_band counts from 1 as GDAL's bands do, at_row and at_col from 0 as pixel offsets do; the
// first value when nothing differs), how many values differ at all, and whether the largest is at most
// --max. Exit 0
// when it is, 1 when it is not or when a value is NaN in one file and not the other (a NaN in both
// places counts as equal), 2 on usage errors, 3 when the two cannot be compared (a file unreadable,
// another size or band count), so that a script tells "differ" from "could not look", as with cmp. For comparing one program's output on two devices
// (scripts/gpu_check.sh: remove_clouds on the GPU against the CPU) or two versions of a run; the
// line is a results row of scripts/gpu/results.py when --case is given.
//
// The files are read in stripes of --stripe rows (raised to whole strips or tiles of both where that
// costs little), so two mosaics larger than memory compare in ~2 x stripe x width x bands floats; the
// answer is the whole-image comparison's, whatever the stripe. A progress bar on stderr when it is a
// terminal (lines every 10% otherwise).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "apps/common/cli.h"
#include "apps/common/progress.h"
#include "data/geotiff.h"
#include "engine/io/json.h"

using namespace nimbus;

namespace {

// Per band, its largest difference and the first pixel (row-major) where it is: the whole image's
// largest is then the first band's that reaches it (the first in band-major order, as one pass over the
// whole image would find it).
struct Difference {
  std::vector<double> worst;
  std::vector<size_t> at;  // pixel offset y * W + x in its band
  size_t differ = 0, nan_mismatch = 0;
};

// Both files (H x W x C), `stripe` rows at a time; throws when a stripe cannot be read.
Difference compare(data::TiffReader& fa, data::TiffReader& fb, int H, int W, int C, int64_t stripe) {
  Difference d;
  d.worst.assign(size_t(C), 0.0);
  d.at.assign(size_t(C), 0);
  Progress bar("raster_diff", H, stderr, Progress::Mode::Auto, "row");
  for (int64_t y0 = 0; y0 < H; y0 += stripe) {
    const int rows = int(std::min<int64_t>(stripe, H - y0));
    const data::Window win{0, int(y0), W, rows};
    const data::Raster ra = fa.read(win), rb = fb.read(win);
    const size_t plane = size_t(rows) * size_t(W);
    for (int c = 0; c < C; ++c) {
      const float* x = ra.band(c);
      const float* y = rb.band(c);
      double& worst = d.worst[size_t(c)];
      for (size_t q = 0; q < plane; ++q) {
        if (std::isnan(x[q]) || std::isnan(y[q])) {
          d.nan_mismatch += std::isnan(x[q]) != std::isnan(y[q]);
          continue;
        }
        const double diff = std::fabs(double(x[q]) - double(y[q]));
        d.differ += diff != 0;
        if (diff > worst) worst = diff, d.at[size_t(c)] = size_t(y0) * size_t(W) + q;
      }
    }
    bar.update(y0 + rows);
  }
  bar.finish();
  return d;
}

int run(int argc, char** argv) {
  cli::Parser p("raster_diff",
                "Compare two GeoTIFFs of the same size and band count: the largest absolute difference, where it "
                "is, and how many values differ; exit 1 when it exceeds --max, 3 when the files cannot be compared.");
  p.add_positional("rasters", "the two GeoTIFFs to compare");
  p.add_double("max", 0, "largest absolute difference allowed (0: the files' values must be equal)").range(0, 1e30);
  p.add_string("case", "", "name of the comparison, written as the JSON line's \"case\" (scripts/gpu/results.py)",
               "NAME");
  p.add_int("stripe", 512, "rows read at a time from each file (raised to whole strips or tiles of both where that costs little)")
      .range(1, data::kMaxTiffSide);
  p.parse_or_exit(argc, argv);
  const std::vector<std::string> files = p.positionals();
  if (files.size() != 2) throw cli::UsageError(str("two GeoTIFFs to compare, got ", files.size()));
  std::optional<data::TiffReader> fa, fb;
  try {
    fa.emplace(files[0]), fb.emplace(files[1]);
    const data::TiffInfo &a = fa->info(), &b = fb->info();
    NIMBUS_CHECK(a.width == b.width && a.height == b.height && a.bands == b.bands, files[1], " is ", b.width, "x",
                 b.height, " with ", b.bands, " bands, but ", files[0], " is ", a.width, "x", a.height, " with ",
                 a.bands, " bands");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "raster_diff: cannot compare: %s\n", e.what());
    return 3;
  }
  const int H = fa->info().height, W = fa->info().width, C = fa->info().bands;
  // Whole blocks of both files where that costs little: a multiple of both block heights (their least
  // common multiple), else of the taller (the other file's blocks at a stripe's edge are then decoded
  // twice); the whole image when that is taller. A file in large compressed strips (one strip for the
  // whole image) is decoded a row at a time and asks for no particular height.
  const int64_t asked = p.get_int("stripe"), rows_a = fa->stripe_rows(), rows_b = fb->stripe_rows();
  int64_t unit = std::lcm(rows_a, rows_b);
  if (unit > std::max(asked, 4 * std::max(rows_a, rows_b))) unit = std::max(rows_a, rows_b);
  const int64_t stripe = std::min<int64_t>((asked + unit - 1) / unit * unit, H);
  Difference d;
  try {
    d = compare(*fa, *fb, H, W, C, stripe);
  } catch (const std::exception& e) {  // a stripe that cannot be read
    std::fprintf(stderr, "raster_diff: cannot compare: %s\n", e.what());
    return 3;
  }
  const size_t band = size_t(std::max_element(d.worst.begin(), d.worst.end()) - d.worst.begin());  // the first largest
  const double largest = d.worst[band];  // 0 when nothing differs: band 1, pixel 0
  const size_t pixel = d.at[band];
  const double bound = p.get_double("max");
  const bool ok = d.nan_mismatch == 0 && largest <= bound;
  std::printf("{\"case\":%s,\"impl\":\"nimbus\",\"ok\":%s,\"max_abs_diff\":%.9g,\"bound_max\":%.9g,"
              "\"at_band\":%zu,\"at_row\":%zu,\"at_col\":%zu,\"values_differing\":%zu,\"values\":%zu,"
              "\"nan_mismatches\":%zu,\"width\":%d,\"height\":%d,\"bands\":%d}\n",
              json::quote(p.get_string("case")).c_str(), ok ? "true" : "false", largest, bound,
              band + 1, pixel / size_t(W), pixel % size_t(W), d.differ,
              size_t(C) * size_t(H) * size_t(W), d.nan_mismatch, W, H, C);
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) { return nimbus::cli::guarded_main("raster_diff", run, argc, argv); }
