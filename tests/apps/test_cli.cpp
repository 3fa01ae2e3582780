// test_cli.cpp: the command-line parser: values, defaults, types, errors, --help, exit codes.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "apps/common/cli.h"
#include "tests/common/child.h"

using namespace nimbus;
using namespace nimbus::cli;

namespace {
Parser make() {
  Parser p("demo", "A demo program.");
  p.add_string("data", "", "dataset root", "DIR")
      .add_int("epochs", 200, "number of epochs")
      .add_double("lr", 1e-3, "learning rate")
      .add_int_list("milestones", "50,100,200", "LR milestones")
      .add_flag("resume", "resume training")
      .add_positional("inputs", "files to process");
  add_common_options(p);
  return p;
}
}  // namespace

TEST_CASE("cli: defaults when nothing is given") {
  Parser p = make();
  CHECK(p.parse({}) == Parser::Result::Ok);
  CHECK(p.get_string("data") == "");
  CHECK(p.get_int("epochs") == 200);
  CHECK(p.get_double("lr") == doctest::Approx(1e-3).scale(0));
  CHECK(p.get_int_list("milestones") == std::vector<int64_t>{50, 100, 200});
  CHECK_FALSE(p.get_flag("resume"));
  CHECK(p.get_string("device") == "auto");
  CHECK(p.get_int("threads") == 0);
  CHECK(p.get_int("seed") == 42);
  CHECK_FALSE(p.given("epochs"));
  CHECK(p.positionals().empty());
}

TEST_CASE("cli: values in both spellings, flags, positionals and --") {
  Parser p = make();
  CHECK(p.parse({"a.tif", "--data", "/x", "--epochs=7", "--lr", "-0.5", "--resume", "--milestones", "3,4",
                 "b.tif", "--device=cpu", "--", "--c.tif"}) == Parser::Result::Ok);
  CHECK(p.get_string("data") == "/x");
  CHECK(p.get_int("epochs") == 7);
  CHECK(p.given("epochs"));
  CHECK(p.get_double("lr") == -0.5);
  CHECK(p.get_flag("resume"));
  CHECK(p.get_int_list("milestones") == std::vector<int64_t>{3, 4});
  CHECK(p.get_string("device") == "cpu");
  CHECK(p.positionals() == std::vector<std::string>{"a.tif", "b.tif", "--c.tif"});
  Parser q = make();
  q.parse({"--resume=false", "--milestones="});
  CHECK_FALSE(q.get_flag("resume"));
  CHECK(q.get_int_list("milestones").empty());
  // Repeated: the last one wins; a positional that looks like a negative number is a positional.
  Parser r = make();
  r.parse({"--epochs", "3", "-7", "--epochs=5"});
  CHECK(r.get_int("epochs") == 5);
  CHECK(r.positionals() == std::vector<std::string>{"-7"});
  Parser q2 = make();  // a word in brackets is one positional, not a list
  q2.parse({"[2023]", "[a,b].tif"});
  CHECK(q2.positionals() == std::vector<std::string>{"[2023]", "[a,b].tif"});
}

// What data-parallel ranks compare (apps::check_ranks_agree): every option, given or not, with numbers in
// one spelling, so 1e-3 and 0.001, 007 and 7 agree and 0.1 keeps its short form.
TEST_CASE("cli: values lists every option with numbers in one spelling") {
  Parser a = make(), b = make();
  REQUIRE(a.parse({"--lr", "1e-3", "--epochs", "007", "--milestones", "3,4"}) == Parser::Result::Ok);
  REQUIRE(b.parse({"--lr", "0.001", "--epochs", "7", "--milestones", "3,4"}) == Parser::Result::Ok);
  CHECK(a.values() == b.values());
  const auto v = a.values();
  REQUIRE(v.size() == 8);  // data, epochs, lr, milestones, resume, device, threads, seed
  CHECK(v[0] == std::pair<std::string, std::string>{"data", ""});
  CHECK(v[1] == std::pair<std::string, std::string>{"epochs", "7"});
  CHECK(v[2] == std::pair<std::string, std::string>{"lr", "0.001"});
  CHECK(v[3] == std::pair<std::string, std::string>{"milestones", "3,4"});
  CHECK(v[4] == std::pair<std::string, std::string>{"resume", "false"});
  Parser c = make();
  REQUIRE(c.parse({"--lr", "0.1"}) == Parser::Result::Ok);
  CHECK(c.values()[2].second == "0.1");
  CHECK(c.values() != b.values());
}

TEST_CASE("cli: usage errors name the option") {
  auto err = [](std::vector<std::string> args, const char* needle) {
    Parser p = make();
    CHECK_THROWS_WITH_AS(p.parse(args), doctest::Contains(needle), UsageError);
  };
  err({"--bogus"}, "unknown option '--bogus'");
  err({"-x"}, "unknown option '-x'");
  err({"--epochs"}, "'--epochs' needs a value");
  err({"--epochs", "ten"}, "--epochs: expected an integer, got 'ten'");
  err({"--epochs=3.5"}, "expected an integer");
  err({"--lr", "fast"}, "--lr: expected a number");
  err({"--milestones", "1,x"}, "expected an integer, got 'x'");
  err({"--milestones", "1,2,"}, "trailing comma");
  err({"--device", "tpu"}, "--device: expected one of cpu|cuda|auto, got 'tpu'");
  err({"--resume=maybe"}, "expected true or false");
  Parser nopos("p", "no positionals");
  CHECK_THROWS_WITH_AS(nopos.parse({"file"}), doctest::Contains("unexpected argument 'file'"), UsageError);
}

TEST_CASE("cli: declared ranges are checked while parsing and shown by --help") {
  auto ranged = [] {
    Parser p("p", "ranges");
    p.add_int("tile", 256, "tile side").range(16, 8192);
    p.add_double("threshold", 0.2, "cloud score threshold").range(0, 1);
    p.add_int_list("blocks", "3,4,6,3", "blocks per stage").range(0, 64);
    return p;
  };
  auto err = [&](std::vector<std::string> args, const char* needle) {
    Parser p = ranged();
    CHECK_THROWS_WITH_AS(p.parse(args), doctest::Contains(needle), UsageError);
  };
  err({"--tile", "4294967304"}, "--tile 4294967304: must be in [16, 8192]");  // no wrap to 8 on the way to int
  err({"--tile", "8"}, "--tile 8: must be in [16, 8192]");
  err({"--threshold", "5"}, "--threshold 5: must be in [0, 1]");
  err({"--threshold", "nan"}, "--threshold: expected a number");
  err({"--blocks", "1,100000000,1,1"}, "--blocks 100000000 (in 1,100000000,1,1): must be in [0, 64]");
  err({"--blocks", "-1,2,2,2"}, "must be in [0, 64]");
  Parser ok = ranged();
  CHECK(ok.parse({"--tile", "16", "--threshold", "1", "--blocks", "0,64,1,1"}) == Parser::Result::Ok);
  CHECK(ok.get_int("tile") == 16);
  CHECK(ok.usage().find("tile side [16, 8192] (default: 256)") != std::string::npos);
  Parser bad("p", "misuse");
  CHECK_THROWS_AS(bad.range(0, 1), Error);  // no option declared yet
  bad.add_flag("resume", "a flag");
  CHECK_THROWS_AS(bad.range(0, 1), Error);  // a flag has no number to bound
}

TEST_CASE("cli: programming errors are Errors, not usage errors") {
  Parser p = make();
  CHECK_THROWS_AS(p.get_int("nope"), Error);
  CHECK_THROWS_AS(p.get_int("data"), Error);  // declared as a string
  CHECK_THROWS_AS(p.add_int("epochs", 1, "again"), Error);
  CHECK_THROWS_AS(Parser("x", "").add_int("n", 0, "").add_choice("c", "z", {"a", "b"}, ""), Error);
}

TEST_CASE("cli: --help lists every option with its help and default") {
  Parser p = make();
  CHECK(p.parse({"--epochs", "3", "--help"}) == Parser::Result::Help);
  std::string u = p.usage();
  for (const char* s : {"Usage: demo [options] inputs...", "A demo program.", "--data DIR", "dataset root",
                        "--epochs N", "(default: 200)", "--lr X", "(default: 0.001)", "--milestones",
                        "(default: 50,100,200)", "--resume", "--device cpu|cuda|auto", "--threads", "--seed",
                        "(default: 42)", "--help", "files to process"})
    CHECK_MESSAGE(u.find(s) != std::string::npos, "usage lacks '", s, "'\n", u);
}

// parse_or_exit runs in a child so that its exit codes can be checked.
TEST_CASE("cli: parse_or_exit exits 0 on --help and 2 on a usage error") {
  auto run = [](std::vector<std::string> args) {
    std::fflush(nullptr);
    pid_t pid = fork();
    if (pid == 0) {
      std::freopen("/dev/null", "w", stdout);
      std::freopen("/dev/null", "w", stderr);
      std::vector<char*> argv{const_cast<char*>("demo")};
      for (auto& a : args) argv.push_back(a.data());
      Parser p = make();
      p.parse_or_exit(int(argv.size()), argv.data());
      _exit(7);  // parsed fine
    }
    const int status = nimbus::test::wait_child(pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  CHECK(run({"--help"}) == 0);
  CHECK(run({"--nope"}) == 2);
  CHECK(run({"--epochs"}) == 2);
  CHECK(run({"--epochs", "3"}) == 7);
}

TEST_CASE("cli: common options resolve the device, threads and seed") {
  Parser p = make();
  p.parse({"--threads", "1", "--seed", "5", "--device", "auto"});
  CommonOptions c = apply_common_options(p);
  CHECK(c.threads == 1);
  CHECK(c.seed == 5);
  CHECK(c.device == (device_available(Device::CUDA) ? Device::CUDA : Device::CPU));
  // Out of range: usage errors from the parser (exit 2), before any option is applied.
  CHECK_THROWS_WITH_AS(make().parse({"--threads", "-3"}), doctest::Contains("--threads -3: must be in [0, 4096]"),
                       UsageError);
  CHECK_THROWS_WITH_AS(make().parse({"--seed", "-5"}), doctest::Contains("--seed"), UsageError);
  if (!device_available(Device::CUDA)) {
    Parser cuda = make();
    cuda.parse({"--device", "cuda"});
    CHECK_THROWS_WITH_AS(apply_common_options(cuda), doctest::Contains("no CUDA device"), Error);
  }
  // Without --device (make_synthetic, plot_figures: nothing to compute on a device): the CPU, and a
  // --device given is a usage error rather than an option that does nothing.
  Parser host("host", "test");
  add_common_options(host, /*with_device=*/false);
  host.parse({"--threads", "1"});
  CHECK(apply_common_options(host).device == Device::CPU);
  Parser given("host", "test");
  add_common_options(given, /*with_device=*/false);
  CHECK_THROWS_AS(given.parse({"--device", "cpu"}), UsageError);
}
