// test_eurosat.cpp: the EuroSAT MS index on the real fixture folders and on
// small trees built here: class order, stratified and file-based splits, and
// errors for unknown, empty, missing or mislabelled folders and wrong tiles.
#include <doctest/doctest.h>

#include <filesystem>

#include <map>
#include <set>

#include "data/eurosat.h"
#include "tests/common/check.h"
#include "tests/data/data_test_util.h"

using namespace nimbus;
using namespace nimbus::data;
using namespace nimbus::test;

namespace {

const std::string real_root =
    "eurosat_ms/shrey160+EuroSAT_MS_Deep_Learning/data/Euro_MS_Test_red/test";

void write_tile(const std::string& path, int bands = 13, SampleType type = SampleType::UInt16, uint64_t seed = 1) {
  fs::create_directories(fs::path(path).parent_path());
  Raster r = random_raster(bands, 8, 8, 0, 4000, seed, type);
  WriteOptions o;
  o.type = type;
  write_geotiff(path, r, o);
}

// n[c] tiles in class c, named <Class>_<i>.tif.
void write_tree(const fs::path& root, const std::vector<int>& n) {
  for (int c = 0; c < kEuroSatClasses; ++c)
    for (int i = 0; i < n[size_t(c)]; ++i) {
      const std::string& cls = eurosat_class_names()[size_t(c)];
      write_tile((root / cls / str(cls, "_", i + 1, ".tif")).string(), 13, SampleType::UInt16, uint64_t(c * 100 + i));
    }
}

}  // namespace

TEST_CASE("eurosat: the real fixture folders index in alphabetical class order") {
  EuroSat ds(real_fixture(real_root));
  REQUIRE(ds.size() == 20);
  const char* expect[] = {"AnnualCrop", "Forest",        "HerbaceousVegetation", "Highway", "Industrial",
                          "Pasture",    "PermanentCrop", "Residential",          "River",   "SeaLake"};
  for (size_t i = 0; i < 20; ++i) {
    CHECK(ds.items()[i].label == int(i / 2));
    CHECK(ds.items()[i].rel.starts_with(std::string(expect[i / 2]) + "/" + expect[i / 2] + "_"));
  }
  CHECK(ds.items()[0].rel == "AnnualCrop/AnnualCrop_1412.tif");
  CHECK(ds.items()[19].rel == "SeaLake/SeaLake_611.tif");
  Raster r = load_eurosat_tile(ds.items()[0].path);
  CHECK(r.bands == 13);
  CHECK(r.width == 64);
  CHECK(r.band(9)[0] == 15);  // B10 of AnnualCrop_1412 at (0,0), as rasterio reads it (expected.json)
}

TEST_CASE("eurosat: stratified split is per class, complete, disjoint and seeded") {
  TempDir tmp;
  const std::vector<int> n = {10, 7, 5, 9, 12, 6, 8, 11, 5, 10};
  write_tree(tmp.path, n);
  EuroSat ds(tmp.path.string());
  REQUIRE(ds.size() == 83);
  EuroSatSplit s = ds.stratified_split(7, 0.6, 0.2);
  std::map<int, int> tr, va, te;
  for (size_t i : s.train) tr[ds.items()[i].label]++;
  for (size_t i : s.val) va[ds.items()[i].label]++;
  for (size_t i : s.test) te[ds.items()[i].label]++;
  for (int c = 0; c < kEuroSatClasses; ++c) {
    CAPTURE(c);
    const int nt = int(std::llround(0.6 * n[size_t(c)])), nv = int(std::llround(0.2 * n[size_t(c)]));
    CHECK(tr[c] == nt);
    CHECK(va[c] == nv);
    CHECK(te[c] == n[size_t(c)] - nt - nv);
  }
  std::set<size_t> all(s.train.begin(), s.train.end());
  all.insert(s.val.begin(), s.val.end());
  all.insert(s.test.begin(), s.test.end());
  CHECK(all.size() == ds.size());  // disjoint and complete
  EuroSatSplit again = ds.stratified_split(7, 0.6, 0.2), other = ds.stratified_split(8, 0.6, 0.2);
  CHECK(again.train == s.train);
  CHECK(again.test == s.test);
  CHECK(other.train != s.train);
  CHECK_THROWS_AS(ds.stratified_split(1, 0.8, 0.3), Error);
  CHECK_THROWS_AS(ds.stratified_split(1, -0.1, 0.3), Error);

  // Split files: written, read back to the same indices; bad lines name the file and line.
  ds.write_split_file(tmp / "val.txt", s.val);
  CHECK(ds.read_split_file(tmp / "val.txt") == s.val);
  // A write that cannot finish is an error naming the file (the stream's close used to go unchecked);
  // no temporary is left behind.
  const std::string nowhere = tmp / "no_such_dir/split.txt";
  CHECK_THROWS_WITH_AS(ds.write_split_file(nowhere, s.val), doctest::Contains(nowhere.c_str()), Error);
  spit(tmp / "mine.txt", "# my split\nForest/Forest_3.tif\n\n  SeaLake/SeaLake_1.tif\r\n");
  auto mine = ds.read_split_file(tmp / "mine.txt");
  REQUIRE(mine.size() == 2);
  CHECK(ds.items()[mine[0]].rel == "Forest/Forest_3.tif");
  CHECK(ds.items()[mine[1]].label == 9);
  spit(tmp / "bad.txt", "Forest/Forest_3.tif\nForest/Forest_99.tif\n");
  CHECK_THROWS_WITH_AS(ds.read_split_file(tmp / "bad.txt"), doctest::Contains("bad.txt line 2"), Error);
  spit(tmp / "dup.txt", "Forest/Forest_3.tif\nForest/Forest_3.tif\n");
  CHECK_THROWS_WITH_AS(ds.read_split_file(tmp / "dup.txt"), doctest::Contains("listed twice"), Error);
}

// The split lists of Neumann et al. 2019 (torchgeo's eurosat-{train,val,test}.txt) name the RGB release's
// files, "Forest_3.jpg", one per line, with no class folder.
TEST_CASE("eurosat: split files of bare names (the standard eurosat-*.txt lists) match tiles by their stem") {
  TempDir tmp;
  write_tree(tmp.path, std::vector<int>(10, 3));
  EuroSat ds(tmp.path.string());
  spit(tmp / "eurosat-val.txt", "Forest_3.jpg\nSeaLake_1.JPG\r\nRiver_2.tif\nAnnualCrop/AnnualCrop_2.tif\n");
  const std::vector<size_t> v = ds.read_split_file(tmp / "eurosat-val.txt");
  REQUIRE(v.size() == 4);
  CHECK(ds.items()[v[0]].rel == "Forest/Forest_3.tif");
  CHECK(ds.items()[v[1]].rel == "SeaLake/SeaLake_1.tif");
  CHECK(ds.items()[v[2]].rel == "River/River_2.tif");
  CHECK(ds.items()[v[3]].label == 0);
  // The same tile by its name and by its path is listed twice.
  spit(tmp / "twice.txt", "Forest_3.jpg\nForest/Forest_3.tif\n");
  CHECK_THROWS_WITH_AS(ds.read_split_file(tmp / "twice.txt"), doctest::Contains("twice.txt line 2"), Error);
  spit(tmp / "missing.txt", "Forest_3.jpg\nForest_4.jpg\n");
  CHECK_THROWS_WITH_AS(ds.read_split_file(tmp / "missing.txt"), doctest::Contains("no tile named Forest_4.tif"),
                       Error);
  spit(tmp / "png.txt", "Forest_3.png\n");
  CHECK_THROWS_WITH_AS(ds.read_split_file(tmp / "png.txt"), doctest::Contains("png.txt line 1"), Error);
  // A name that two class folders hold cannot be placed by its name alone.
  write_tile(tmp / "Forest/tile_9.tif");
  write_tile(tmp / "River/tile_9.tif");
  EuroSat two(tmp.path.string());
  spit(tmp / "ambiguous.txt", "tile_9.jpg\n");
  CHECK_THROWS_WITH_AS(two.read_split_file(tmp / "ambiguous.txt"), doctest::Contains("ambiguous"), Error);
  spit(tmp / "placed.txt", "River/tile_9.tif\n");
  CHECK(two.items()[two.read_split_file(tmp / "placed.txt").at(0)].label == 8);
}

TEST_CASE("eurosat: the class a path's layout names, or none") {
  CHECK(eurosat_label_of("/data/EuroSAT_MS/Forest/Forest_12.tif") == 1);
  CHECK(eurosat_label_of("SeaLake/SeaLake_1.tif") == 9);
  CHECK(eurosat_label_of("Forest/River_3.tif") == -1);   // folder and name disagree
  CHECK(eurosat_label_of("gathered/Forest_12.tif") == -1);  // no class folder
  CHECK(eurosat_label_of("Forests/Forests_1.tif") == -1);
}

TEST_CASE("eurosat: a folder of split files gives the split (the standard set or a run's own)") {
  TempDir tmp;
  write_tree(tmp / "data", std::vector<int>(10, 4));
  EuroSat ds(tmp / "data");
  // A run's own files read back to the split that wrote them.
  const EuroSatSplit s = ds.stratified_split(3, 0.5, 0.25);
  fs::create_directories(tmp / "run");
  ds.write_split_file(tmp / "run/split_train.txt", s.train);
  ds.write_split_file(tmp / "run/split_val.txt", s.val);
  ds.write_split_file(tmp / "run/split_test.txt", s.test);
  std::vector<std::string> files;
  const EuroSatSplit back = ds.read_split_folder(tmp / "run", &files);
  CHECK(back.train == s.train);
  CHECK(back.val == s.val);
  CHECK(back.test == s.test);
  CHECK(files.at(2) == tmp / "run/split_test.txt");
  // The standard set, bare names in any order; each part comes back sorted.
  fs::create_directories(tmp / "std");
  spit(tmp / "std/eurosat-train.txt", "SeaLake_4.jpg\nForest_1.jpg\nAnnualCrop_2.jpg\n");
  spit(tmp / "std/eurosat-val.txt", "River_3.jpg\n");
  spit(tmp / "std/eurosat-test.txt", "");
  const EuroSatSplit st = ds.read_split_folder(tmp / "std");
  REQUIRE(st.train.size() == 3);
  CHECK(std::is_sorted(st.train.begin(), st.train.end()));
  CHECK(ds.items()[st.train[0]].rel == "AnnualCrop/AnnualCrop_2.tif");
  CHECK(ds.items()[st.val.at(0)].rel == "River/River_3.tif");
  CHECK(st.test.empty());
  // A tile in two parts, a missing part, both sets, neither: errors naming the files.
  spit(tmp / "std/eurosat-test.txt", "Forest_1.jpg\n");
  CHECK_THROWS_WITH_AS(ds.read_split_folder(tmp / "std"),
                       doctest::Contains("Forest/Forest_1.tif is listed in both"), Error);
  fs::remove(tmp / "std/eurosat-test.txt");
  CHECK_THROWS_WITH_AS(ds.read_split_folder(tmp / "std"), doctest::Contains("eurosat-test.txt is missing"), Error);
  spit(tmp / "std/split_val.txt", "");
  CHECK_THROWS_WITH_AS(ds.read_split_folder(tmp / "std"), doctest::Contains("holds both"), Error);
  fs::create_directories(tmp / "empty");
  CHECK_THROWS_WITH_AS(ds.read_split_folder(tmp / "empty"), doctest::Contains("holds no split files"), Error);
}

TEST_CASE("eurosat: bad folders and tiles are errors naming them") {
  const std::vector<int> one(10, 1);
  {
    TempDir tmp;
    write_tree(tmp.path, one);
    fs::create_directories(tmp / "Forrest");
    spit(tmp / "Forrest/x.tif", "");
    CHECK_THROWS_WITH_AS(EuroSat(tmp.path.string()), doctest::Contains("unknown class folder 'Forrest'"), Error);
  }
  {  // the root given one level too high (EuroSATallBands.zip unpacks to ds/images/.../tif/<Class>/): named
    TempDir tmp;
    write_tree(tmp / "ds/images/remote_sensing/otherDatasets/sentinel_2/tif", one);
    const std::string where = tmp / "ds/images/remote_sensing/otherDatasets/sentinel_2/tif";
    CHECK_THROWS_WITH_AS(EuroSat(tmp.path.string()),
                         doctest::Contains(("the class folders are in " + where + ": give that folder").c_str()), Error);
    CHECK(EuroSat(where).size() == 10);
  }
  {
    TempDir tmp;
    write_tree(tmp.path, one);
    fs::remove_all(tmp / "River");
    CHECK_THROWS_WITH_AS(EuroSat(tmp.path.string()), doctest::Contains("River is missing"), Error);
    fs::create_directories(tmp / "River");
    spit(tmp / "River/notes.txt", "no tifs here");
    CHECK_THROWS_WITH_AS(EuroSat(tmp.path.string()), doctest::Contains("has no .tif files"), Error);
  }
  {
    TempDir tmp;
    write_tree(tmp.path, one);
    write_tile(tmp / "Highway/Highway_2.tif", 12);
    CHECK_THROWS_WITH_AS(EuroSat(tmp.path.string()), doctest::Contains("Highway_2.tif"), Error);
    CHECK_THROWS_WITH_AS(EuroSat(tmp.path.string()), doctest::Contains("12-band uint16"), Error);
    // Unchecked at index time, the loader's sample hits it instead.
    EuroSat lazy(tmp.path.string(), false);
    size_t bad = 0;
    for (size_t i = 0; i < lazy.size(); ++i)
      if (lazy.items()[i].rel == "Highway/Highway_2.tif") bad = i;
    SampleFn fn = eurosat_sample_fn(lazy, {bad}, {});
    Rng rng(1);
    CHECK_THROWS_WITH_AS(fn(0, rng), doctest::Contains("Highway_2.tif"), Error);
  }
  {
    TempDir tmp;
    write_tree(tmp.path, one);
    write_tile(tmp / "Pasture/Pasture_9.tif", 13, SampleType::Float32);
    CHECK_THROWS_WITH_AS(EuroSat(tmp.path.string()), doctest::Contains("13-band float32"), Error);
  }
  {
    TempDir tmp;
    write_tree(tmp.path, one);
    write_tile(tmp / "Forest/River_3.tif");
    CHECK_THROWS_WITH_AS(EuroSat(tmp.path.string()), doctest::Contains("a River file in the Forest folder"), Error);
  }
  {  // A tile that is not square cannot be turned a quarter: refused when the flips are on, read without.
    TempDir tmp;
    write_tree(tmp.path, one);
    const std::string wide = tmp / "SeaLake/SeaLake_1.tif";
    write_geotiff(wide, random_raster(13, 8, 16, 0, 4000, 3, SampleType::UInt16), WriteOptions{});
    EuroSat ds(tmp.path.string());
    size_t k = 0;
    for (size_t i = 0; i < ds.size(); ++i)
      if (ds.items()[i].path == wide) k = i;
    EuroSatSampleOptions flips;
    flips.augment = AugmentConfig{0, false, true};
    Rng rng(1);
    CHECK_THROWS_WITH_AS(eurosat_sample_fn(ds, {k}, flips)(0, rng),
                         doctest::Contains("SeaLake_1.tif: a 16x8 tile cannot be turned a quarter"), Error);
    CHECK(eurosat_sample_fn(ds, {k}, {})(0, rng).shapes[0] == Shape{13, 8, 16});
  }
  CHECK_THROWS_WITH_AS(EuroSat("/nonexistent/eurosat"), doctest::Contains("not a directory"), Error);
}

TEST_CASE("eurosat: samples through the loader carry image and label") {
  EuroSat ds(real_fixture(real_root));
  std::vector<size_t> idx(ds.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  EuroSatSampleOptions o;
  o.transform = [](std::vector<float>& chw, int, int) {
    for (auto& v : chw) v /= 10000.f;
  };
  LoaderOptions lo;
  lo.batch_size = 6;
  lo.threads = 2;
  lo.shuffle = false;
  Loader loader(idx.size(), eurosat_sample_fn(ds, idx, o), lo);
  CHECK(loader.batches_per_epoch() == 3);
  Batch b = loader.next();
  CHECK(b["image"].shape() == Shape{6, 13, 64, 64});
  CHECK(b.labels == std::vector<int64_t>{0, 0, 1, 1, 2, 2});
  // Every value of every sample: the tile as read, through the transform (a band in the wrong place
  // or a stray augmentation anywhere in a sample shows).
  const size_t per = size_t(13) * 64 * 64;
  const std::vector<float> got = b["image"].to_vector();
  for (size_t k = 0; k < 6; ++k) {
    CAPTURE(k);
    const Raster tile = load_eurosat_tile(ds.items()[k].path);
    REQUIRE(tile.data.size() == per);
    size_t differ = 0;
    for (size_t i = 0; i < per; ++i) differ += got[k * per + i] != tile.data[i] / 10000.f;
    CHECK(differ == 0);
  }
}
