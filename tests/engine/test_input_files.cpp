// test_input_files.cpp: the programs' rule that no output replaces an input (engine/io/input_files.h):
// off by default, files told apart by device and inode, write_file_atomic refusing before it writes.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "engine/io/input_files.h"
#include "engine/io/safetensors.h"
#include "kernels/common/error.h"

using namespace nimbus;
namespace fs = std::filesystem;

namespace {
std::string read_all(const std::string& path) {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
}  // namespace

TEST_CASE("input files: off by default, and on, a noted file is refused under any of its names, others are not") {
  const fs::path dir = fs::temp_directory_path() / ("nimbus_inputs_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "sub");
  const std::string a = (dir / "a.csv").string(), b = (dir / "b.csv").string(), link = (dir / "link.csv").string();
  write_file_atomic(a, "the input\n");
  fs::create_symlink(a, link);
  note_input(a);  // off: not recorded
  {
    const ProtectInputsScope protect;
    refuse_if_input(a);  // noted while off: nothing to refuse
    note_input(link);    // the same file through a link
    for (const std::string& target : {a, link, (dir / "sub/../a.csv").string()}) {
      CAPTURE(target);
      CHECK_THROWS_WITH_AS(refuse_if_input(target), doctest::Contains("input files"), Error);
      CHECK_THROWS_WITH_AS(write_file_atomic(target, "an output\n"), doctest::Contains("refusing to overwrite"), Error);
    }
    CHECK(read_all(a) == "the input\n");
    write_file_atomic(b, "an output\n");  // another file: written
    CHECK(read_all(b) == "an output\n");
    refuse_if_input((dir / "missing.csv").string());  // nothing there: nothing to refuse
  }
  write_file_atomic(a, "rewritten\n");  // off again: the record is gone
  CHECK(read_all(a) == "rewritten\n");
  fs::remove_all(dir);
}
