// eurosat.h: the EuroSAT MS dataset (experiment.md): 64x64, 13-band uint16
// tiles in 10 class folders, <root>/<Class>/<Class>_<n>.tif.
//
// Class index = alphabetical order of the 10 official names (AnnualCrop = 0 ...
// SeaLake = 9). The index holds paths only; tiles are read when a sample is
// made. Splits are stratified (per class) from a seed and fractions, or come
// from split files listing tiles one per line: as paths under the root
// ("Forest/Forest_3.tif"), or as bare file names, as the standard split lists of
// Neumann et al. 2019 (torchgeo's eurosat-{train,val,test}.txt, "Forest_3.jpg") do.
#pragma once
#include <array>
#include <functional>
#include <string>
#include <vector>

#include "data/augment.h"
#include "data/geotiff.h"
#include "data/loader.h"
#include "data/raster_pack.h"
#include "data/sentinel2.h"

namespace nimbus::data {

constexpr int kEuroSatClasses = 10;
const std::array<std::string, kEuroSatClasses>& eurosat_class_names();

struct EuroSatItem {
  std::string path;  // full path
  std::string rel;   // "<Class>/<file>.tif", what split files list
  int label = 0;
};

struct EuroSatSplit {
  std::vector<size_t> train, val, test;  // indices into EuroSat::items()
};

class EuroSat {
 public:
  // Indexes root. check_files: read every tile's header now and reject any that
  // is not 13-band uint16 (costs one small read per file); otherwise that check
  // happens when the tile is loaded.
  explicit EuroSat(const std::string& root, bool check_files = true);

  const std::vector<EuroSatItem>& items() const { return items_; }
  size_t size() const { return items_.size(); }
  const std::string& root() const { return root_; }

  // Per class: shuffle (seed), first round(train*n) -> train, next round(val*n) -> val, rest -> test.
  EuroSatSplit stratified_split(uint64_t seed, double train_frac, double val_frac) const;
  // Indices of the tiles listed in a split file: "<Class>/<file>.tif", or a bare "<file>.jpg|.tif|.tiff"
  // matched by its stem ('#' comments and blank lines skipped). A tile not under the root, a name two
  // class folders hold, or a tile listed twice is an Error naming the file and line.
  std::vector<size_t> read_split_file(const std::string& path) const;
  void write_split_file(const std::string& path, const std::vector<size_t>& indices) const;
  // The split a folder's files give: the standard lists eurosat-{train,val,test}.txt (Neumann et al.
  // 2019; torchgeo's; 16,200 / 5,400 / 5,400 tiles of the full dataset) or an earlier run's
  // split_{train,val,test}.txt. The three files of one set must all be there (an empty one is an empty
  // part); a folder with both sets, or neither, or a tile in two parts is an Error naming the files.
  // Each part sorted as stratified_split's are; `files` (optional) gets the three paths read.
  EuroSatSplit read_split_folder(const std::string& dir, std::vector<std::string>* files = nullptr) const;

 private:
  std::string root_;
  std::vector<EuroSatItem> items_;  // by class, then file name
};

// The class a file's EuroSAT layout names: its folder is a class's and its name <Class>_..., as the
// dataset is distributed (-1 otherwise). classify scores its predictions against it.
int eurosat_label_of(const std::string& path);

// A tile, checked to be 13-band uint16; values stay raw DN.
Raster load_eurosat_tile(const std::string& path);

struct EuroSatSampleOptions {
  AugmentConfig augment{0, false, false};  // default: whole tile, no flip/rotation
  // Optional in-place transform of the (13, h, w) DN tile (the classifier's input scaling).
  std::function<void(std::vector<float>& chw, int h, int w)> transform;
  // The band order the tiles are read in (empty: not checked) and where it comes from ("--bands
  // eurosat"): a tile read from its file whose band descriptions say another order is an Error
  // (check_declared_bands), whether it is read from its file or from a pack (which keeps them).
  BandList file_bands;
  std::string file_bands_from;
  // Optional raster pack (raster_pack.h): the tiles it holds are read from it, the rest from disk.
  std::shared_ptr<const RasterPack> pack;
  // The flip and quarter turn drawn as usual (the same random numbers) but not applied: the sample
  // carries them as "augment", a 0-d code 4 flip + rot, for engine/ops/augment.h on the device.
  bool flip_rotate_on_device = false;
};
// Sample k of the loader is items()[indices[k]]: field "image" (13, h, w), label = class
// [, "augment" () with flip_rotate_on_device].
SampleFn eurosat_sample_fn(const EuroSat& ds, std::vector<size_t> indices, EuroSatSampleOptions options);

}  // namespace nimbus::data
