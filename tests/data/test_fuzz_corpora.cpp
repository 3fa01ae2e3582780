// test_fuzz_corpora.cpp: replays the committed fuzz corpora (fuzz/corpus/<target>/) through the fuzz
// targets (fuzz/targets.h) in every build, with g++: seed_* files are good inputs and must be read;
// regression_* files are inputs that once crashed or misbehaved and must now be refused with a clean
// Error. Anything escaping a target (another exception) fails the test. libFuzzer itself runs in CI
// (scripts/fuzz.sh).
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz/targets.h"

namespace fs = std::filesystem;

namespace {

void replay(const std::string& target, bool (*fn)(const uint8_t*, size_t)) {
  const fs::path dir = fs::path(NIMBUS_FIXTURES) / ".." / ".." / "fuzz" / "corpus" / target;
  REQUIRE(fs::is_directory(dir));
  int seeds = 0, regressions = 0;
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    CAPTURE(name);
    std::ifstream in(e.path(), std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    bool read = false;
    CHECK_NOTHROW(read = fn(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
    if (name.rfind("seed_", 0) == 0) {
      CHECK(read);
      ++seeds;
    } else if (name.rfind("regression_", 0) == 0) {
      CHECK_FALSE(read);
      ++regressions;
    } else {
      FAIL("corpus files are named seed_* or regression_*");
    }
  }
  CHECK(seeds >= 1);
  MESSAGE(target, ": ", seeds, " seeds, ", regressions, " regressions");
}

}  // namespace

TEST_CASE("fuzz corpora: the GeoTIFF reader reads every seed and refuses every regression cleanly") {
  replay("geotiff", nimbus::fuzz::geotiff);
}
TEST_CASE("fuzz corpora: the safetensors reader reads every seed and refuses every regression cleanly") {
  replay("safetensors", nimbus::fuzz::safetensors);
}
TEST_CASE("fuzz corpora: the SEN12MS-CR list reader reads every seed and refuses every regression cleanly") {
  replay("sen12mscr_list", nimbus::fuzz::sen12mscr_list);
}
TEST_CASE("fuzz corpora: the EuroSAT split-file reader reads every seed and refuses every regression cleanly") {
  replay("eurosat_split", nimbus::fuzz::eurosat_split);
}
TEST_CASE("fuzz corpora: the raster pack reader reads every seed and refuses every regression cleanly") {
  replay("raster_pack", nimbus::fuzz::raster_pack);
}
