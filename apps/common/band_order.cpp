// band_order.cpp: EuroSAT <-> SEN12MS-CR band order (see band_order.h).
#include "apps/common/band_order.h"

#include <vector>

#include "data/synthetic_spectra.h"
#include "kernels/common/error.h"

namespace nimbus::apps {

BandOrder parse_band_order(const std::string& s) {
  if (s == "sen12ms") return BandOrder::Sen12ms;
  if (s == "eurosat") return BandOrder::EuroSat;
  throw Error(str("band order must be sen12ms or eurosat, got '", s, "'"));
}

const char* band_order_name(BandOrder o) { return o == BandOrder::EuroSat ? "eurosat" : "sen12ms"; }

BandOrder guess_band_order(int height, int width) {
  return height == 64 && width == 64 ? BandOrder::EuroSat : BandOrder::Sen12ms;
}

void to_sen12ms_order(float* chw, int bands, size_t hw, BandOrder from, const std::string& what) {
  NIMBUS_CHECK(bands == data::kS2Bands, what, ": has ", bands, " bands; a Sentinel-2 image needs 13");
  if (from == BandOrder::Sen12ms) return;
  // EuroSAT file band i holds S2 band kEuroSatFileOrder[i].
  std::vector<float> copy(chw, chw + size_t(bands) * hw);
  for (int i = 0; i < bands; ++i) {
    const size_t dst = size_t(data::kEuroSatFileOrder[size_t(i)]);
    std::copy(copy.begin() + ptrdiff_t(size_t(i) * hw), copy.begin() + ptrdiff_t(size_t(i + 1) * hw),
              chw + dst * hw);
  }
}

}  // namespace nimbus::apps
