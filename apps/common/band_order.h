// band_order.h: the two 13-band Sentinel-2 layouts the apps meet, and the
// conversion to the one the models use.
//
//   sen12ms: B1..B8, B8A, B9, B10, B11, B12   SEN12MS-CR S2, DSen2-CR in/out, OUR CLASSIFIER INPUT
//   eurosat: B1..B8, B9, B10, B11, B12, B8A   EuroSAT MS GeoTIFFs (B8A stored last; measured by
//                                             engineer "synth", data/synthetic_spectra.h kEuroSatFileOrder)
// train_resnet reorders EuroSAT tiles into the sen12ms order before anything
// else (statistics, training), so a classifier checkpoint always expects
// sen12ms-ordered DN and DSen2-CR output can be fed to it unchanged.
// "auto" (classify) picks per file: 64x64 tiles are EuroSAT patches -> eurosat,
// anything else (SEN12MS-CR 256x256 patches, DSen2-CR output) -> sen12ms.
#pragma once
#include <cstddef>
#include <string>

namespace nimbus::apps {

enum class BandOrder { Sen12ms, EuroSat };

BandOrder parse_band_order(const std::string& s);  // "sen12ms" | "eurosat"; Error otherwise
const char* band_order_name(BandOrder o);
// The "auto" rule above, from the image size.
BandOrder guess_band_order(int height, int width);
// chw: 13 bands of hw values, band-major, in order `from`; rewritten in the sen12ms order.
// Error when bands != 13 (what names the file).
void to_sen12ms_order(float* chw, int bands, size_t hw, BandOrder from, const std::string& what);

}  // namespace nimbus::apps
