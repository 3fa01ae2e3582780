// geotiff_output.h: the option of the apps that write results as GeoTIFFs (remove_clouds, cloud_mask,
// classify --map-dir, which refuses it without --map-dir): --compress none|deflate. (make_synthetic
// writes its datasets uncompressed, as the real ones are distributed.) Deflate is lossless, with GDAL's
// predictor (data/geotiff.h: WriteOptions::deflate), so GDAL, QGIS and rasterio read the files as they
// read their own COMPRESS=DEFLATE PREDICTOR=2 output; a whole Sentinel-2 granule's 13 bands (3.1 GB
// uncompressed) shrink to about half or two thirds, for about a minute of one core (docs/experiment.md).
// None by default: the files are written fastest, as the datasets come.
#pragma once
#include "apps/common/cli.h"

namespace nimbus::apps {

void add_compress_option(cli::Parser& p);
// Does --compress ask for Deflate (data::WriteOptions::deflate)?
bool compress_deflate(const cli::Parser& p);

}  // namespace nimbus::apps
