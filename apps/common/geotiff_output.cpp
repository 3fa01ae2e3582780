// geotiff_output.cpp: --compress (see geotiff_output.h).
#include "apps/common/geotiff_output.h"

namespace nimbus::apps {

void add_compress_option(cli::Parser& p) {
  p.add_choice("compress", "none", {"none", "deflate"},
               "compression of the GeoTIFFs written: none, or lossless Deflate with a predictor (GDAL's "
               "COMPRESS=DEFLATE PREDICTOR=2; smaller files, slower to write)");
}

bool compress_deflate(const cli::Parser& p) { return p.get_string("compress") == "deflate"; }

}  // namespace nimbus::apps
