// cli.h: a tiny declarative command-line parser for the nimbus apps.
//
// Declare options (long names only), then parse:
//   cli::Parser p("train_resnet", "Train the land-cover classifier.");
//   p.add_string("data", "", "EuroSAT MS root folder", "DIR");
//   p.add_int("epochs", 200, "number of epochs");
//   p.add_int_list("milestones", "50,100,200,250", "epochs where the LR is divided by 5");
//   p.add_flag("resume", "continue from the last checkpoint in --out");
//   p.add_positional("inputs", "GeoTIFF files or folders");
//   cli::add_common_options(p);               // --device, --threads, --seed
//   p.parse_or_exit(argc, argv);              // --help: usage, exit 0; bad input: exit 2
//   int epochs = p.get_int("epochs");
//
// Accepted forms: --name value, --name=value, --flag, --flag=true|false, and
// "--" to end options; a repeated option keeps its last value. CLI11 (Debian's
// libcli11-dev) reads the command line; values are then checked against the
// declared type and range here, while parsing, so a bad number is a usage error
// (exit 2, naming the option), not an exception later. --help is written here
// too, in the layout the apps' documentation shows: every option, its range and default.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/device.h"
#include "kernels/common/error.h"

namespace nimbus::cli {

// A mistake on the command line (unknown option, missing or malformed value).
struct UsageError : Error {
  using Error::Error;
};

class Parser {
 public:
  enum class Result { Ok, Help };
  enum class Kind { String, Int, Double, IntList, Flag, Choice };

  Parser(std::string program, std::string description);

  // Each returns *this so declarations chain. `metavar` names the value in the usage text.
  Parser& add_string(const std::string& name, const std::string& def, const std::string& help,
                     const std::string& metavar = "STR");
  Parser& add_int(const std::string& name, int64_t def, const std::string& help, const std::string& metavar = "N");
  Parser& add_double(const std::string& name, double def, const std::string& help,
                     const std::string& metavar = "X");
  // Comma-separated integers, e.g. "50,100,200"; "" is the empty list.
  Parser& add_int_list(const std::string& name, const std::string& def, const std::string& help,
                       const std::string& metavar = "N,N,..");
  // One of `choices`; the default must be one of them.
  Parser& add_choice(const std::string& name, const std::string& def, const std::vector<std::string>& choices,
                     const std::string& help);
  Parser& add_flag(const std::string& name, const std::string& help);  // false unless given
  // Positional arguments: all non-option words, in order, under one name for the usage text.
  Parser& add_positional(const std::string& name, const std::string& help);
  // The range [lo, hi] of the option declared last (an int, a double, or every item of an int list):
  // a value outside it is a usage error naming the option and the range, found while parsing, so an
  // app never sees it (2^32 + 8 cast to an int is 8; a negative size wraps). Shown by --help.
  Parser& range(double lo, double hi);

  // Parse argv[1..]. Returns Help when --help/-h was given; throws UsageError otherwise.
  Result parse(const std::vector<std::string>& args);
  // What apps call: prints usage to stdout and exits 0 on --help; prints
  // "<program>: <problem>" and a hint to stderr and exits 2 on a usage error.
  void parse_or_exit(int argc, char** argv);

  std::string usage() const;  // the full --help text

  // Typed getters: the value given, or the default. Asking for an undeclared
  // option or with the wrong type is a programming error (throws Error).
  std::string get_string(const std::string& name) const;  // works for String and Choice
  int64_t get_int(const std::string& name) const;
  double get_double(const std::string& name) const;
  bool get_flag(const std::string& name) const;
  std::vector<int64_t> get_int_list(const std::string& name) const;
  bool given(const std::string& name) const;  // true when the option appeared on the command line
  bool declared(const std::string& name) const;  // true when the app declared the option
  // Every declared option and its value, given or default, in declaration order; numbers
  // in one spelling (--lr 1e-1 and --lr 0.1 give the same text), so two command lines can be compared.
  std::vector<std::pair<std::string, std::string>> values() const;
  const std::vector<std::string>& positionals() const { return positionals_; }
  const std::string& program() const { return program_; }

 private:
  struct Option {
    std::string name, help, metavar, value, def;
    Kind kind;
    std::vector<std::string> choices;
    bool given = false;
    bool ranged = false;
    double lo = 0, hi = 0;
  };
  Parser& add(Option o);
  const Option& find(const std::string& name, Kind want) const;
  void set_value(Option& o, const std::string& v);

  std::string program_, description_, positional_name_, positional_help_;
  std::vector<Option> options_;
  std::vector<std::string> positionals_;
};

// Parsers for option values (also used by the Parser): throw UsageError naming `what`.
int64_t parse_int(const std::string& s, const std::string& what);
double parse_double(const std::string& s, const std::string& what);
std::vector<int64_t> parse_int_list(const std::string& s, const std::string& what);

// Refuses an output that would overwrite an input: throws UsageError("<out_option> <out> is also
// <option> (the input): refusing to overwrite it") when `out` names the same file as any of `inputs`
// (option, path) pairs, after resolving paths (".", "..", links); empty paths are ignored.
void refuse_output_over_input(const std::string& out_option, const std::string& out,
                              const std::vector<std::pair<std::string, std::string>>& inputs);
// Two outputs of one run named the same file (the same comparison): a usage error naming both options.
void refuse_one_file_for_two_outputs(const std::string& option_a, const std::string& a, const std::string& option_b,
                                     const std::string& b);

// Before the work that produces it: `out` (the value of out_option) must be a file that can be written
// at the end. Throws UsageError when it is a folder, or a device or a pipe that the writer cannot
// stream to (`stream_ok` false: a GeoTIFF, written to a temporary and renamed into place, which would
// replace the device); creates its folder when missing (as the trainers and remove_clouds do); throws
// Error naming it when nothing can be created there (no permission, a read-only filesystem), so a long
// run does not end by failing to write its result. A symbolic link is followed (the writers keep it).
void prepare_output_file(const std::string& out_option, const std::string& out, bool stream_ok);

// The options every app shares.
struct CommonOptions {
  Device device = Device::CPU;  // "auto" resolved: cuda when available, else cpu
  int threads = 0;              // CPU threads actually set (0 never after apply)
  uint64_t seed = 42;
  std::string precision = "fp32";  // the apps that run a model: --precision resolved (apps/common/device.h)
};
// Adds --device cpu|cuda|auto (default auto), --threads N (0 = all cores), --seed N (default 42).
// with_device false: the programs that compute nothing on a device (make_synthetic, plot_figures) take
// --threads and --seed only (a --device there was accepted and did nothing); their device is the CPU.
void add_common_options(Parser& p, bool with_device = true);
// Reads them back, sets the OpenMP thread count and seeds the global RNG.
// Throws Error when --device cuda is asked for but no CUDA runtime is present.
CommonOptions apply_common_options(const Parser& p);

// The main() of every app: returns run(argc, argv); an exception becomes
// "<program>: <message>" on stderr and exit code 1. A UsageError (an app's own checks of its
// options after parsing) becomes "<program>: <message> (see --help)" and exit code 2, like the
// parser's own usage errors in parse_or_exit.
int guarded_main(const char* program, int (*run)(int, char**), int argc, char** argv);

}  // namespace nimbus::cli
