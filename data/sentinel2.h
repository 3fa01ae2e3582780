// sentinel2.h: the Sentinel-1/2 domain constants every layer shares (band count, band names, the
// two band orders the data comes in, the DN scale), and band lists: which bands an image or a
// model holds, in what order, and how to move an image from one order to another.
//
// A band's canonical index is its position in the SEN12MS-CR order below; a BandList is the
// canonical indices of an image's bands (or a model's input channels), in the order they lie.
//
//   sen12ms: B1, B2, B3, B4, B5, B6, B7, B8, B8A, B9, B10, B11, B12   SEN12MS-CR S2, DSen2-CR in and
//            out, torchgeo's 13-band Sentinel-2 weights (SSL4EO-S12), the classifiers train_resnet writes
//   eurosat: B1, B2, B3, B4, B5, B6, B7, B8, B9, B10, B11, B12, B8A   EuroSAT MS GeoTIFFs as distributed
//            (B8A stored last), and torchgeo's EuroSAT dataset, which feeds them in that order
//
// Where an order comes from is never a guess: a model names its bands in its checkpoint (metadata
// "bands"), a file by its GDAL band descriptions or its dataset's layout (s2_bands_of), or the
// user says (--bands).
#pragma once
#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nimbus::data {

constexpr int kS2Bands = 13;  // Sentinel-2 MSI bands, B1..B12 with B8A
constexpr int kS1Bands = 2;   // Sentinel-1 GRD polarisations: VV, VH (dB)
// Level-1C digital numbers are top-of-atmosphere reflectance x 10000.
constexpr float kS2DnPerReflectance = 10000.f;

// Canonical index of each band (its place in the SEN12MS-CR order).
enum S2Band { B1 = 0, B2, B3, B4, B5, B6, B7, B8, B8A, B9, B10, B11, B12 };
constexpr std::array<std::string_view, kS2Bands> kS2BandNames = {"B1", "B2",  "B3", "B4",  "B5",  "B6", "B7",
                                                                 "B8", "B8A", "B9", "B10", "B11", "B12"};
// EuroSAT MS files: file band i holds canonical band kEuroSatFileOrder[i].
constexpr std::array<int, kS2Bands> kEuroSatFileOrder = {B1, B2, B3, B4, B5, B6, B7, B8, B9, B10, B11, B12, B8A};

using BandList = std::vector<int>;  // canonical band indices, in the order the data holds them

BandList sen12ms_bands();  // 0..12
BandList eurosat_bands();  // kEuroSatFileOrder

// "sen12ms", "eurosat", or band names separated by commas ("B1,B2,...,B12,B8A"; case and spaces
// ignored). Every name must be a Sentinel-2 band and none repeated; Error naming `what` otherwise.
BandList parse_bands(const std::string& spec, const std::string& what);
// "B1,B2,...": the form checkpoints store under "bands".
std::string bands_csv(const BandList& bands);
// "sen12ms" / "eurosat" when the list is one of the two orders, else its csv.
std::string bands_name(const BandList& bands);

// The band order of a Sentinel-2 file, from what the file says: its GDAL band descriptions when
// they name Sentinel-2 bands (GeoTIFFs that nimbus, GDAL or rasterio wrote with descriptions), else
// the dataset layout its path follows:
//   EuroSAT MS   <Class>/<Class>_<n>.tif, Class one of the ten EuroSAT classes, or a file
//                named <Class>_<n>.tif (digits n) in a folder not named after a class  -> eurosat
//   SEN12MS-CR   a name starting "ROIs" with "_s2_" or "_s2_cloudy_" in it
//                (ROIs1158_spring_s2_cloudy_1_p30.tif), or any .tif in a folder
//                s2, s2_cloudy or s2_cloudfree (the flattened copies DSen2-CR uses)  -> sen12ms
// nullopt when neither tells; the caller then asks for --bands. Error when the descriptions name
// Sentinel-2 bands but not `bands` distinct ones.
std::optional<BandList> s2_bands_of(const std::string& path, const std::vector<std::string>& band_descriptions,
                                    int bands);

// A loader reads a file in the order `read_as` without asking the file (the trainers: --bands, or
// SEN12MS-CR's order). Error when the file's GDAL band descriptions name Sentinel-2 bands in another
// order: "<path>: its band descriptions say <csv>, but it is read as <how> (<csv>)". A file without
// such descriptions passes.
void check_declared_bands(const std::string& path, const std::vector<std::string>& band_descriptions,
                          const BandList& read_as, const std::string& how);

// Error naming `what` when a band of `to` is not in `from` (what reorder_bands would refuse), for a
// check of every input's header before any work.
void check_bands_cover(const BandList& from, const BandList& to, const std::string& what);

// Moves a band-major image (from.size() bands of hw values) into the order `to`: band j of the
// result is the band of `chw` whose canonical index is to[j]. Error naming `what` when a band of
// `to` is not in `from`. Returns chw unchanged when the orders are equal.
std::vector<float> reorder_bands(std::vector<float> chw, size_t hw, const BandList& from, const BandList& to,
                                 const std::string& what);

}  // namespace nimbus::data
