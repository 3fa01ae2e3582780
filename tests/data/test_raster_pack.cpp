// test_raster_pack.cpp: the packed GeoTIFF cache (data/raster_pack.h). Windows read from a pack equal
// read_geotiff's on the real fixtures and on every sample type; the loaders give the same samples with
// and without a pack; a changed or missing source makes the pack stale; a truncated or corrupt pack
// is an Error naming the file, at every truncation length.
#include <doctest/doctest.h>

#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "data/eurosat.h"
#include "data/raster_pack.h"
#include "data/sen12mscr.h"
#include "engine/io/input_files.h"
#include "tests/common/check.h"
#include "tests/data/data_test_util.h"

using namespace nimbus;
using namespace nimbus::data;
using namespace nimbus::test;

namespace {

const std::string kGlf = "sen12ms_cr/xufangchn+GLF-CR/data/";
const std::string kEuroSat = "eurosat_ms/shrey160+EuroSAT_MS_Deep_Learning/data/Euro_MS_Test_red/test";
const char* kPatches[2] = {"ROIs1970_fall_139_p839.tif", "ROIs2017_winter_112_p797.tif"};

std::vector<std::string> glf_files() {
  std::vector<std::string> out;
  for (const char* p : kPatches)
    for (const char* folder : {"s1/", "s2_cloudfree/", "s2_cloudy/"}) out.push_back(real_fixture(kGlf + folder + p));
  return out;
}

// A small raster of each sample type, with values that use the type's range (negative for the signed
// types, past 2^24 for the 32-bit integers, fractions and NaN for float32 and float64).
std::string write_typed(const TempDir& tmp, SampleType type) {
  Raster r;
  r.width = 7, r.height = 5, r.bands = 3, r.type = type;
  for (int i = 0; i < 3 * 5 * 7; ++i) {
    switch (type) {
      case SampleType::UInt8: r.data.push_back(float((i * 37) % 256)); break;
      case SampleType::UInt16: r.data.push_back(float((i * 4099) % 65536)); break;
      case SampleType::Int16: r.data.push_back(float((i * 977) % 65536 - 32768)); break;
      case SampleType::Float32: r.data.push_back(i == 11 ? NAN : float(i) * 0.3f - 7.f); break;
      case SampleType::Int8: r.data.push_back(float((i * 37) % 256 - 128)); break;
      // past 2^24, and the types' ends (float32 rounds 2^32 - 1 and 2^31 - 1 up past them: the pack clamps)
      case SampleType::UInt32:
        r.data.push_back(i == 3 ? 4294967295.f : float((uint64_t(i) * 123456789u) % 4294967296u));
        break;
      case SampleType::Int32:
        r.data.push_back(i == 3   ? 2147483647.f
                         : i == 4 ? -2147483648.f
                                  : float(int64_t((uint64_t(i) * 123456789u) % 4294967296u) - 2147483648));
        break;
      case SampleType::Float64: r.data.push_back(i == 11 ? NAN : float(i) * 0.3f - 7.f); break;
    }
  }
  const std::string path = tmp / str("typed_", sample_type_name(type), ".tif");
  WriteOptions o;
  o.type = type;
  write_geotiff(path, r, o);
  return path;
}

bool same_values(const std::vector<float>& a, const std::vector<float>& b) {  // NaN equals NaN
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) return false;
  return true;
}

}  // namespace

TEST_CASE("raster pack: windows equal read_geotiff's on the real fixtures and every sample type") {
  TempDir tmp;
  std::vector<std::string> files = glf_files();
  for (SampleType t : {SampleType::UInt8, SampleType::UInt16, SampleType::Int16, SampleType::Float32, SampleType::Int8,
                       SampleType::UInt32, SampleType::Int32, SampleType::Float64})
    files.push_back(write_typed(tmp, t));
  for (const std::string& f : glob_files(real_fixture(kEuroSat), ".tif")) files.push_back(f);
  REQUIRE(files.size() == 6 + 8 + 20);
  const std::string pack_path = tmp / "all.pack";
  size_t calls = 0;
  build_raster_pack(pack_path, files, [&](size_t done, size_t total) {
    ++calls;
    CHECK(total == files.size());
    CHECK(done == calls);
  });
  CHECK(calls == files.size());
  const auto pack = RasterPack::open(pack_path);
  CHECK(pack->size() == files.size());
  for (const std::string& f : files) {
    CAPTURE(f);
    const TiffInfo want = read_tiff_info(f), got = pack->info(f);
    CHECK(got.width == want.width);
    CHECK(got.height == want.height);
    CHECK(got.bands == want.bands);
    CHECK(got.type == want.type);
    CHECK(same_values(pack->read(f).data, read_geotiff(f).data));
    // The corners, the middle, single rows and columns.
    for (const Window w : {Window{0, 0, 1, 1}, Window{want.width - 3, want.height - 2, 3, 2},
                           Window{1, want.height / 2, want.width - 2, 1}, Window{want.width / 3, 0, 1, want.height},
                           Window{want.width / 4, want.height / 4, want.width / 2, want.height / 2}}) {
      const Raster a = pack->read(f, w), b = read_geotiff(f, w);
      CHECK(a.width == b.width);
      CHECK(a.height == b.height);
      CHECK(same_values(a.data, b.data));
    }
    CHECK_THROWS_WITH_AS(pack->read(f, Window{1, 0, want.width, 1}), doctest::Contains("is outside the"), Error);
  }
  CHECK_FALSE(pack->contains(tmp / "elsewhere.tif"));
  CHECK_THROWS_WITH_AS(pack->info(tmp / "elsewhere.tif"), doctest::Contains("holds no"), Error);
  // A relative spelling of a packed file finds it: keys are absolute and normal.
  const std::string rel = std::filesystem::relative(files[0]).string();
  CHECK(pack->contains(rel));
  CHECK(pack->contains(std::filesystem::path(files[0]).parent_path().string() + "/./" +
                       std::filesystem::path(files[0]).filename().string()));
}

TEST_CASE("raster pack: the loaders give the same samples with and without it") {
  TempDir tmp;
  const std::vector<std::string> files = glf_files();
  const auto pack = ensure_raster_pack(tmp / "glf.pack", files);
  for (const char* p : kPatches) {
    Sen12mscrTriplet t;
    t.s1 = real_fixture(kGlf + "s1/" + p);
    t.s2 = real_fixture(kGlf + "s2_cloudfree/" + p);
    t.s2_cloudy = real_fixture(kGlf + "s2_cloudy/" + p);
    TripletSampleOptions plain;
    plain.keep_raw_cloudy = true;
    TripletSampleOptions packed = plain;
    packed.pack = pack;
    for (uint64_t seed : {1u, 2u, 3u}) {
      Rng a(seed), b(seed);
      const Sample x = load_triplet(t, a, plain), y = load_triplet(t, b, packed);
      REQUIRE(x.names == y.names);
      for (size_t k = 0; k < x.values.size(); ++k) {
        CAPTURE(x.names[k]);
        CHECK(x.shapes[k] == y.shapes[k]);
        CHECK(x.values[k] == y.values[k]);
      }
    }
  }
  // The packed loader really reads the pack: with the files gone it still gives the same sample.
  {
    Sen12mscrTriplet t;
    std::string* members[3] = {&t.s1, &t.s2, &t.s2_cloudy};
    const char* folders[3] = {"s1/", "s2_cloudfree/", "s2_cloudy/"};
    std::vector<std::string> copies;
    for (int i = 0; i < 3; ++i) {
      *members[i] = tmp / str("copy_", i, ".tif");
      std::filesystem::copy_file(real_fixture(kGlf + folders[i] + kPatches[0]), *members[i]);
      copies.push_back(*members[i]);
    }
    TripletSampleOptions packed;
    packed.pack = ensure_raster_pack(tmp / "copies.pack", copies);
    Rng a(7);
    const Sample before = load_triplet(t, a, packed);
    for (const std::string& c : copies) std::filesystem::remove(c);
    Rng b(7);
    const Sample after = load_triplet(t, b, packed);
    CHECK(after.values == before.values);
    Rng c(7);
    CHECK_THROWS_AS(load_triplet(t, c, TripletSampleOptions{}), Error);
  }
  // EuroSAT: the whole real fixture folder, packed, through the sample function with augmentation.
  const EuroSat ds(real_fixture(kEuroSat));
  std::vector<std::string> tiles;
  for (const EuroSatItem& it : ds.items()) tiles.push_back(it.path);
  EuroSatSampleOptions plain;
  plain.augment = AugmentConfig{48, true, true};
  EuroSatSampleOptions packed = plain;
  packed.pack = ensure_raster_pack(tmp / "eurosat.pack", tiles);
  std::vector<size_t> all(ds.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  const SampleFn f = eurosat_sample_fn(ds, all, plain), g = eurosat_sample_fn(ds, all, packed);
  for (size_t i = 0; i < ds.size(); ++i) {
    Rng a(i), b(i);
    const Sample x = f(i, a), y = g(i, b);
    CHECK(x.label == y.label);
    CHECK(x.values == y.values);
  }
}

TEST_CASE("raster pack: a changed, missing or unlisted source makes it stale, and ensure rebuilds it") {
  TempDir tmp;
  const std::string a = write_typed(tmp, SampleType::UInt16), b = write_typed(tmp, SampleType::Float32);
  const std::string pack_path = tmp / "p.pack";
  CHECK(RasterPack::stale_reason(pack_path, {a, b}).find("does not exist") != std::string::npos);
  std::vector<std::string> log;
  auto logger = [&](const std::string& s) { log.push_back(s); };
  ensure_raster_pack(pack_path, {a, b}, logger);
  REQUIRE(log.size() == 1);
  CHECK(log[0].find("does not exist") != std::string::npos);
  CHECK(RasterPack::stale_reason(pack_path, {a, b}).empty());
  ensure_raster_pack(pack_path, {a, b}, logger);
  CHECK(log.size() == 1);  // fresh: not rebuilt

  // Not every source listed: stale, naming the one it lacks.
  const std::string c = write_typed(tmp, SampleType::UInt8);
  CHECK(RasterPack::stale_reason(pack_path, {a, b, c}).find("does not hold " + c) != std::string::npos);

  // Rewritten with other values (a new size or modification time): refused, then rebuilt with them.
  {
    Raster r = read_geotiff(a);
    r.height += 1;
    r.data.assign(size_t(r.bands) * size_t(r.height) * size_t(r.width), 42.f);
    write_geotiff(a, r, WriteOptions{});
  }
  CHECK_THROWS_WITH_AS(RasterPack::open(pack_path), doctest::Contains("changed since the pack was built"), Error);
  CHECK(RasterPack::open(pack_path, /*check_sources=*/false)->info(a).height == 5);  // unchecked: the old pixels
  const auto fresh = ensure_raster_pack(pack_path, {a, b}, logger);
  REQUIRE(log.size() == 2);
  CHECK(log[1].find("changed since the pack was built") != std::string::npos);
  CHECK(fresh->info(a).height == 6);
  CHECK(fresh->read(a).data == read_geotiff(a).data);

  // A source gone: refused, naming it.
  std::filesystem::remove(b);
  CHECK_THROWS_WITH_AS(RasterPack::open(pack_path), doctest::Contains((pack_key(b) + " is missing").c_str()), Error);
  // Building from a missing file is an error naming it, and leaves no pack behind.
  CHECK_THROWS_WITH_AS(build_raster_pack(tmp / "q.pack", {a, b}), doctest::Contains(b.c_str()), Error);
  CHECK_FALSE(std::filesystem::exists(tmp / "q.pack"));
}

TEST_CASE("raster pack: a truncated or corrupt pack is an Error naming it, at every length") {
  TempDir tmp;
  const std::string a = write_typed(tmp, SampleType::Int16), b = write_typed(tmp, SampleType::UInt8);
  const std::string good = tmp / "good.pack";
  build_raster_pack(good, {a, b});
  const std::string bytes = slurp(good);
  const std::string bad = tmp / "bad.pack";
  // Every truncation (the data, the directory, the header): refused, never a crash or a bad read.
  for (size_t n = 0; n < bytes.size(); ++n) {
    spit(bad, bytes.substr(0, n));
    CHECK_THROWS_WITH_AS(RasterPack::open(bad, false), doctest::Contains(bad.c_str()), Error);
  }
  // Corrupt fields: each one refused with what is wrong.
  auto patched = [&](size_t at, const std::string& with, const char* expected) {
    std::string b2 = bytes;
    b2.replace(at, with.size(), with);
    spit(bad, b2);
    CHECK_THROWS_WITH_AS(RasterPack::open(bad, false), doctest::Contains(expected), Error);
  };
  patched(0, "X", "no NIMBUSRP magic");
  patched(8, std::string("\x04\0\0\0", 4), "raster pack version 4, this build reads 2 to 3 (rebuild it)");
  patched(8, std::string("\x01\0\0\0", 4), "raster pack version 1, this build reads 2 to 3 (rebuild it)");
  patched(16, std::string("\xff\xff\xff\xff\xff\xff\xff\x0f", 8), "entries in a");  // 2^60 entries
  patched(24, std::string("\x08\0\0\0\0\0\0\0", 8), "does not end the");           // directory inside the header
  // The first entry's band count (after its u32 path length, the path, size and time) set to 0.
  uint64_t dir_at = 0;
  std::memcpy(&dir_at, bytes.data() + 24, 8);
  uint32_t path_len = 0;
  std::memcpy(&path_len, bytes.data() + dir_at, 4);
  patched(size_t(dir_at) + 4 + path_len + 16, std::string("\0\0\0\0", 4), "(corrupt)");
  // Its data size one byte short.
  patched(size_t(dir_at) + 4 + path_len + 40, std::string("\x01", 1), "bytes at");
  // Appended garbage.
  spit(bad, bytes + "xx");
  CHECK_THROWS_WITH_AS(RasterPack::open(bad, false), doctest::Contains("truncated or appended to"), Error);
  CHECK_THROWS_WITH_AS(RasterPack::open(tmp / "none.pack"), doctest::Contains("cannot open the raster pack"), Error);
  CHECK(RasterPack::open(good)->read(a).data == read_geotiff(a).data);
}

TEST_CASE("raster pack: band descriptions travel in the pack, and a version-1 pack (none) is rebuilt") {
  TempDir tmp;
  Raster r;
  r.width = 4, r.height = 2, r.bands = 3, r.type = SampleType::UInt16;
  r.data.assign(24, 7.f);
  r.band_names = {"B4", "B3", "B2"};
  const std::string named = tmp / "named.tif", plain = write_typed(tmp, SampleType::UInt8);
  write_geotiff(named, r, {});
  const std::string path = tmp / "p.pack";
  build_raster_pack(path, {named, plain});
  auto pack = RasterPack::open(path);
  CHECK(pack->info(named).band_names == r.band_names);
  CHECK(pack->read(named, Window{1, 0, 2, 2}).band_names == r.band_names);  // as read_geotiff gives them
  CHECK(pack->info(plain).band_names.empty());
  // A source named twice (two lines of a triplet list sharing a file) is packed once.
  build_raster_pack(tmp / "twice.pack", {named, plain, named});
  CHECK(RasterPack::open(tmp / "twice.pack")->size() == 2);
  CHECK(read_info_via(pack.get(), named).band_names == read_tiff_info(named).band_names);
  // A name count that is neither 0 nor the band count: corrupt.
  const std::string bytes = slurp(path);
  uint64_t dir_at = 0;
  std::memcpy(&dir_at, bytes.data() + 24, 8);
  uint32_t path_len = 0;
  std::memcpy(&path_len, bytes.data() + dir_at, 4);
  std::string bad = bytes;
  bad.replace(size_t(dir_at) + 4 + path_len + 48, 4, std::string("\x02\0\0\0", 4));
  spit(tmp / "bad.pack", bad);
  CHECK_THROWS_WITH_AS(RasterPack::open(tmp / "bad.pack", false), doctest::Contains("2 band names for 3 bands"), Error);
  // A pack from before the names (version 1) is stale: ensure_raster_pack builds it again, saying why.
  pack.reset();
  std::string v1 = bytes;
  v1.replace(8, 4, std::string("\x01\0\0\0", 4));
  spit(path, v1);
  std::string said;
  pack = ensure_raster_pack(path, {named, plain}, [&](const std::string& m) { said = m; });
  CHECK_MESSAGE(said.find("version 1, this build reads 2 to 3") != std::string::npos, said);
  CHECK(pack->info(named).band_names == r.band_names);
}

// A pack is written with the lowest version that holds its types: 2 for the four types the datasets
// are distributed in, so that a build reading version 2 only still reads it; 3 with int8, uint32,
// int32 or float64 entries, which such a build then calls stale (rebuilt), not corrupt.
TEST_CASE("raster pack: the version written is the lowest that holds the entries' types") {
  TempDir tmp;
  auto version_of = [](const std::string& pack) {
    const std::string bytes = slurp(pack);
    REQUIRE(bytes.size() >= 12);
    uint32_t v = 0;
    std::memcpy(&v, bytes.data() + 8, 4);
    return v;
  };
  std::vector<std::string> old_types;
  for (SampleType t : {SampleType::UInt8, SampleType::UInt16, SampleType::Int16, SampleType::Float32})
    old_types.push_back(write_typed(tmp, t));
  build_raster_pack(tmp / "old.pack", old_types);
  CHECK(version_of(tmp / "old.pack") == 2);
  for (SampleType t : {SampleType::Int8, SampleType::UInt32, SampleType::Int32, SampleType::Float64}) {
    CAPTURE(int(t));
    const std::string newer = write_typed(tmp, t), pack = tmp / "new.pack";
    std::vector<std::string> sources = old_types;
    sources.push_back(newer);
    build_raster_pack(pack, sources);
    CHECK(version_of(pack) == 3);
    CHECK(RasterPack::open(pack)->read(newer).data.size() == read_geotiff(newer).data.size());
    // The same pack labelled version 2: an entry of a type version 2 cannot hold is corrupt.
    std::string bytes = slurp(pack);
    bytes.replace(8, 4, std::string("\x02\0\0\0", 4));
    spit(tmp / "relabelled.pack", bytes);
    CHECK_THROWS_WITH_AS(RasterPack::open(tmp / "relabelled.pack", false),
                         doctest::Contains("in a version 2 pack (corrupt)"), Error);
  }
}

// Only a pack may be replaced: a --pack path naming someone's file (a tile, a checkpoint) is refused
// and the file kept; so is one of this run's inputs, even when the file read is a pack's source.
TEST_CASE("raster pack: never replaces a file that is not a pack, nor an input of the run") {
  TempDir tmp;
  const std::string src = write_typed(tmp, SampleType::UInt16);
  const std::string other = tmp / "last.safetensors";
  { std::ofstream(other) << "{\"not\": \"a pack\"}"; }
  CHECK_THROWS_WITH_AS(build_raster_pack(other, {src}), doctest::Contains("is not a raster pack"), Error);
  std::ifstream kept(other);
  CHECK(std::string(std::istreambuf_iterator<char>(kept), {}) == "{\"not\": \"a pack\"}");
  // A pack is rebuilt in place, as before.
  const std::string pack = tmp / "p.pack";
  build_raster_pack(pack, {src});
  build_raster_pack(pack, {src});
  CHECK(RasterPack::open(pack, true)->contains(src));
  // Through a symbolic link: the pack it names is rebuilt, the link stays.
  const std::string link = tmp / "link.pack";
  fs::create_symlink("p.pack", link);
  build_raster_pack(link, {src});
  CHECK(fs::is_symlink(link));
  CHECK(RasterPack::open(link, true)->contains(src));
  // A pipe is no pack: refused, and it stays a pipe.
  const std::string fifo = tmp / "fifo.pack";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_WITH_AS(build_raster_pack(fifo, {src}), doctest::Contains("is not a file"), Error);
  CHECK(fs::is_fifo(fifo));
  // Where nothing can be created: the error names the pack asked for, not only its temporary.
  const std::string under_file = src + "/x.pack";
  CHECK_THROWS_WITH_AS(build_raster_pack(under_file, {src}),
                       doctest::Contains((under_file + ": cannot create the raster pack").c_str()), Error);
  // With the programs' protection on (engine/io/input_files.h), a source the run read is refused before
  // the magic is looked at: it stays a GeoTIFF.
  const ProtectInputsScope protect;
  const Raster before = read_geotiff(src);
  CHECK_THROWS_WITH_AS(build_raster_pack(src, {src}), doctest::Contains("input files"), Error);
  CHECK(same_values(read_geotiff(src).data, before.data));
}
