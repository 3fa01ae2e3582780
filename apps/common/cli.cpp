// cli.cpp: the declarative command-line parser (see cli.h): CLI11 reads the command line, this
// file declares the options, checks values and ranges, and writes --help.
#include "apps/common/cli.h"

#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "engine/distributed/process_group.h"
#include "engine/io/input_files.h"
#include "engine/io/output_path.h"
#include "engine/io/temp_files.h"
#include "engine/random.h"

namespace nimbus::cli {

int64_t parse_int(const std::string& s, const std::string& what) {
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno == ERANGE)
    throw UsageError(str(what, ": expected an integer, got '", s, "'"));
  return int64_t(v);
}

double parse_double(const std::string& s, const std::string& what) {
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(v))
    throw UsageError(str(what, ": expected a number, got '", s, "'"));
  return v;
}

std::vector<int64_t> parse_int_list(const std::string& s, const std::string& what) {
  std::vector<int64_t> out;
  if (s.empty()) return out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(parse_int(item, str(what, " (list item)")));
  if (s.back() == ',') throw UsageError(str(what, ": trailing comma in '", s, "'"));
  return out;
}

Parser::Parser(std::string program, std::string description)
    : program_(std::move(program)), description_(std::move(description)) {}

Parser& Parser::add(Option o) {
  NIMBUS_CHECK(!o.name.empty() && o.name != "help", "cli: option name '", o.name, "' is reserved or empty");
  for (const Option& e : options_) NIMBUS_CHECK(e.name != o.name, "cli: option --", o.name, " declared twice");
  o.value = o.def;
  set_value(o, o.def);  // validates the default
  o.given = false;
  options_.push_back(std::move(o));
  return *this;
}

Parser& Parser::add_string(const std::string& name, const std::string& def, const std::string& help,
                           const std::string& metavar) {
  return add({name, help, metavar, "", def, Kind::String, {}});
}
Parser& Parser::add_int(const std::string& name, int64_t def, const std::string& help, const std::string& metavar) {
  return add({name, help, metavar, "", std::to_string(def), Kind::Int, {}});
}
Parser& Parser::add_double(const std::string& name, double def, const std::string& help,
                           const std::string& metavar) {
  std::ostringstream os;
  os << def;  // shortest readable form for the usage text ("0.001", "1e-05")
  return add({name, help, metavar, "", os.str(), Kind::Double, {}});
}
Parser& Parser::add_int_list(const std::string& name, const std::string& def, const std::string& help,
                             const std::string& metavar) {
  return add({name, help, metavar, "", def, Kind::IntList, {}});
}
Parser& Parser::add_choice(const std::string& name, const std::string& def,
                           const std::vector<std::string>& choices, const std::string& help) {
  std::string mv;
  for (const auto& c : choices) mv += (mv.empty() ? "" : "|") + c;
  return add({name, help, mv, "", def, Kind::Choice, choices});
}
Parser& Parser::add_flag(const std::string& name, const std::string& help) {
  return add({name, help, "", "", "false", Kind::Flag, {}});
}
Parser& Parser::add_positional(const std::string& name, const std::string& help) {
  positional_name_ = name;
  positional_help_ = help;
  return *this;
}

Parser& Parser::range(double lo, double hi) {
  NIMBUS_CHECK(!options_.empty(), "cli: range() before any option");
  Option& o = options_.back();
  NIMBUS_CHECK(o.kind == Kind::Int || o.kind == Kind::Double || o.kind == Kind::IntList, "cli: --", o.name,
               " has no numeric value to bound");
  NIMBUS_CHECK(lo <= hi, "cli: --", o.name, ": empty range");
  o.ranged = true;
  o.lo = lo;
  o.hi = hi;
  return *this;
}

namespace {
std::string num(double x) {
  std::ostringstream os;
  os << x;
  return os.str();
}
}  // namespace

// Checks v against the option's type and range, and stores it.
void Parser::set_value(Option& o, const std::string& v) {
  const std::string what = "--" + o.name;
  auto in_range = [&](double x, const std::string& shown) {
    if (o.ranged && !(x >= o.lo && x <= o.hi))
      throw UsageError(str(what, " ", shown, ": must be in [", num(o.lo), ", ", num(o.hi), "]"));
  };
  switch (o.kind) {
    case Kind::Int: in_range(double(parse_int(v, what)), v); break;
    case Kind::Double: in_range(parse_double(v, what), v); break;
    case Kind::IntList:
      for (int64_t x : parse_int_list(v, what)) in_range(double(x), str(x, " (in ", v, ")"));
      break;
    case Kind::Flag:
      if (v != "true" && v != "false") throw UsageError(str(what, ": expected true or false, got '", v, "'"));
      break;
    case Kind::Choice:
      if (std::find(o.choices.begin(), o.choices.end(), v) == o.choices.end())
        throw UsageError(str(what, ": expected one of ", o.metavar, ", got '", v, "'"));
      break;
    case Kind::String: break;
  }
  o.value = v;
  o.given = true;
}

// CLI11 reads the command line: --name value, --name=value, flags (with =true|false), repeated
// options (the last wins), "--", positionals, unknown options and missing values. Every value then
// goes through set_value, which checks its type and range with messages that name the option.
Parser::Result Parser::parse(const std::vector<std::string>& args) {
  CLI::App app{description_, program_};
  app.set_help_flag("-h,--help");
  app.allow_extras();  // reported below, in our words
  std::vector<std::string> raw(options_.size());
  std::vector<CLI::Option*> declared(options_.size());
  for (size_t i = 0; i < options_.size(); ++i) {
    const Option& o = options_[i];
    declared[i] = o.kind == Kind::Flag ? app.add_flag("--" + o.name + "{true}", raw[i], o.help)
                                       : app.add_option("--" + o.name, raw[i], o.help);
    declared[i]->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  }
  // Positionals are not declared to CLI11: a vector option would read "[a,b]" as two words. They
  // arrive among the extras, in order, and are sorted out below.
  // Words after "--" are positionals whatever they look like (handled here: CLI11 passes them on
  // as extras when extras are allowed).
  const auto dashes = std::find(args.begin(), args.end(), "--");
  // "--name=" gives the empty value ("" is the empty list), which CLI11 reads as a missing one:
  // it gets the value as a word of its own.
  std::vector<std::string> words;
  for (auto it = args.begin(); it != dashes; ++it) {
    if (it->size() > 3 && it->starts_with("--") && it->back() == '=' && it->find('=') == it->size() - 1) {
      words.push_back(it->substr(0, it->size() - 1));
      words.emplace_back();
    } else {
      words.push_back(*it);
    }
  }
  std::vector<std::string> reversed(words.rbegin(), words.rend());  // CLI11 wants them last first
  const std::vector<std::string> after(dashes == args.end() ? dashes : dashes + 1, args.end());
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    return Result::Help;
  } catch (const CLI::ArgumentMismatch& e) {  // "--epochs: 1 required TEXT missing"
    const std::string what = e.what(), name = what.substr(0, what.find(':'));
    for (const Option& o : options_)
      if ("--" + o.name == name) throw UsageError(str("option '", name, "' needs a value (", o.metavar, ")"));
    throw UsageError(what);
  } catch (const CLI::ParseError& e) {
    throw UsageError(e.what());
  }
  std::vector<std::string> positional;
  for (const std::string& a : app.remaining()) {
    if (a.size() >= 2 && a[0] == '-' && !std::isdigit(static_cast<unsigned char>(a[1])))
      throw UsageError(a[1] == '-' ? str("unknown option '", a.substr(0, a.find('=')), "'")
                                   : str("unknown option '", a, "' (options are spelled --name)"));
    positional.push_back(a);
  }
  positional.insert(positional.end(), after.begin(), after.end());
  if (positional_name_.empty() && !positional.empty())
    throw UsageError(str("unexpected argument '", positional.front(), "'"));
  for (size_t i = 0; i < options_.size(); ++i)
    if (declared[i]->count() > 0) set_value(options_[i], raw[i]);
  positionals_ = positional;
  return Result::Ok;
}

void Parser::parse_or_exit(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (parse(args) == Result::Help) {
      std::fputs(usage().c_str(), stdout);
      std::exit(0);
    }
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s\nTry '%s --help' for the list of options.\n", program_.c_str(), e.what(),
                 program_.c_str());
    std::exit(2);
  }
}

std::string Parser::usage() const {
  std::ostringstream os;
  os << "Usage: " << program_ << " [options]";
  if (!positional_name_.empty()) os << " " << positional_name_ << "...";
  os << "\n\n" << description_ << "\n\n";
  if (!positional_name_.empty()) os << "Arguments:\n  " << positional_name_ << "...\n      " << positional_help_ << "\n\n";
  os << "Options:\n";
  for (const Option& o : options_) {
    os << "  --" << o.name;
    if (o.kind != Kind::Flag) os << " " << o.metavar;
    os << "\n      " << o.help;
    if (o.ranged) os << " [" << num(o.lo) << ", " << num(o.hi) << "]";
    if (o.kind != Kind::Flag && !o.def.empty()) os << " (default: " << o.def << ")";
    os << "\n";
  }
  os << "  --help\n      show this help and exit\n";
  return os.str();
}

const Parser::Option& Parser::find(const std::string& name, Kind want) const {
  for (const Option& o : options_) {
    if (o.name != name) continue;
    bool ok = o.kind == want || (want == Kind::String && o.kind == Kind::Choice);
    NIMBUS_CHECK(ok, "cli: option --", name, " read with the wrong type");
    return o;
  }
  throw Error(str("cli: option --", name, " was never declared"));
}

std::string Parser::get_string(const std::string& name) const { return find(name, Kind::String).value; }
int64_t Parser::get_int(const std::string& name) const { return parse_int(find(name, Kind::Int).value, name); }
double Parser::get_double(const std::string& name) const {
  return parse_double(find(name, Kind::Double).value, name);
}
bool Parser::get_flag(const std::string& name) const { return find(name, Kind::Flag).value == "true"; }
std::vector<int64_t> Parser::get_int_list(const std::string& name) const {
  return parse_int_list(find(name, Kind::IntList).value, name);
}
bool Parser::given(const std::string& name) const {
  for (const Option& o : options_)
    if (o.name == name) return o.given;
  throw Error(str("cli: option --", name, " was never declared"));
}

std::vector<std::pair<std::string, std::string>> Parser::values() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const Option& o : options_) {
    std::string v = o.value;
    switch (o.kind) {
      case Kind::Int: v = std::to_string(get_int(o.name)); break;
      case Kind::Double: v = exact_str(get_double(o.name)); break;
      case Kind::IntList: {
        v.clear();
        for (int64_t x : get_int_list(o.name)) v += (v.empty() ? "" : ",") + std::to_string(x);
        break;
      }
      default: break;
    }
    out.emplace_back(o.name, v);
  }
  return out;
}

bool Parser::declared(const std::string& name) const {
  for (const Option& o : options_)
    if (o.name == name) return true;
  return false;
}

void add_common_options(Parser& p, bool with_device) {
  if (with_device)
    p.add_choice("device", "auto", {"cpu", "cuda", "auto"}, "where to compute; auto picks cuda when available");
  p.add_int("threads", 0, "CPU threads (0 = all cores)").range(0, 4096);
  p.add_int("seed", 42, "random seed: the same seed repeats a run exactly on the same device, whatever --threads "
            "(on the CPU every sum is split by the shapes alone, not by the thread count)").range(0, 9223372036854775807.0);
}

CommonOptions apply_common_options(const Parser& p) {
  CommonOptions c;
  const std::string dev = p.declared("device") ? p.get_string("device") : "cpu";
  if (dev == "auto") {
    c.device = device_available(Device::CUDA) ? Device::CUDA : Device::CPU;
  } else {
    c.device = parse_device(dev);
    NIMBUS_CHECK(device_available(c.device), "--device ", dev,
                 " was asked for but no CUDA device is available in this build or on this machine");
  }
  int64_t t = p.get_int("threads");  // the parser holds it to [0, 4096], and the seed to [0, 2^63)
  c.threads = t > 0 ? int(t) : omp_get_num_procs();
  omp_set_num_threads(c.threads);
  int64_t seed = p.get_int("seed");
  c.seed = uint64_t(seed);
  manual_seed(c.seed);
  return c;
}

namespace {
// Whether two paths name one file: the same file when both exist (links, other spellings), else the
// same path once `.`, `..` and links are resolved.
bool same_file(const std::string& a, const std::string& b) {
  namespace fs = std::filesystem;
  std::error_code ec_a, ec_b, ec_eq;
  if (fs::exists(a) && fs::exists(b)) return fs::equivalent(a, b, ec_eq);
  return fs::weakly_canonical(fs::path(a), ec_a) == fs::weakly_canonical(fs::path(b), ec_b);
}
}  // namespace

void refuse_output_over_input(const std::string& out_option, const std::string& out,
                              const std::vector<std::pair<std::string, std::string>>& inputs) {
  if (out.empty()) return;
  for (const auto& [option, in] : inputs)
    if (!in.empty() && same_file(out, in))
      throw UsageError(str(out_option, " ", out, " is also ", option, " (an input): refusing to overwrite it"));
}

void refuse_one_file_for_two_outputs(const std::string& option_a, const std::string& a, const std::string& option_b,
                                     const std::string& b) {
  if (!a.empty() && !b.empty() && same_file(a, b))
    throw UsageError(str(option_a, " ", a, " is also ", option_b, ": two outputs cannot share one file"));
}

void prepare_output_file(const std::string& out_option, const std::string& out, bool stream_ok) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(out, ec)) throw UsageError(str(out_option, " ", out, " is a folder: give a file name"));
  if (fs::exists(out, ec) && !fs::is_regular_file(out, ec)) {
    // A device or a pipe (/dev/null, /dev/stdout): write_file_atomic writes it directly; a GeoTIFF
    // cannot be streamed, and renaming into place would replace the device with a plain file.
    if (stream_ok) return;
    throw UsageError(str(out_option, " ", out, " is a device or a pipe: this output is written to a temporary file "
                         "and renamed into place; give a file name"));
  }
  const std::string target = atomic_output_path(out);  // where the writer will rename to: a link's file
  const fs::path dir = fs::path(target).parent_path();
  if (!dir.empty() && !fs::is_directory(dir, ec)) {
    if (fs::exists(dir, ec)) throw UsageError(str(out_option, " ", out, ": ", dir.string(), " is not a folder"));
    fs::create_directories(dir, ec);
    NIMBUS_CHECK(!ec, out_option, " ", out, ": cannot create its folder ", dir.string(), ": ", ec.message());
  }
  // A probe beside it, removed at once: the same kind of file the atomic writers create there.
  const std::string probe = target + ".probe." + std::to_string(::getpid());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  NIMBUS_CHECK(fd >= 0, out_option, " ", out, ": cannot create a file there: ", std::strerror(errno));
  ::close(fd);
  ::unlink(probe.c_str());
}

int guarded_main(const char* program, int (*run)(int, char**), int argc, char** argv) {
  // In a data-parallel run the failing rank names itself and stops every rank (abort_all): the others
  // would otherwise wait forever in their next collective.
  auto who = [program] {
    return launched_with_several_ranks() ? str(program, " (", describe_rank(), ")") : std::string(program);
  };
  protect_inputs(true);  // no output of a program may replace one of its inputs (engine/io/input_files.h)
  remove_temp_files_on_signals();  // Ctrl-C leaves no half-written temporary behind (engine/io/temp_files.h)
  try {
    return run(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s (see --help)\n", who().c_str(), e.what());
    abort_all(2);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", who().c_str(), e.what());
    abort_all(1);
    return 1;
  }
}

}  // namespace nimbus::cli
