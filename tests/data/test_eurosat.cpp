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

TEST_CASE("eurosat: bad folders and tiles are errors naming them") {
  const std::vector<int> one(10, 1);
  {
    TempDir tmp;
    write_tree(tmp.path, one);
    fs::create_directories(tmp / "Forrest");
    spit(tmp / "Forrest/x.tif", "");
    CHECK_THROWS_WITH_AS(EuroSat(tmp.path.string()), doctest::Contains("unknown class folder 'Forrest'"), Error);
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
