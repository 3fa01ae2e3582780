// app_runner.h: run a built nimbus app from a test and collect what it did.
//
// The apps live in <build>/bin/, the test executables in <build>/tests/, so an
// app is found next to this test binary: /proc/self/exe/../../bin/<name>.
// run_app spawns it directly (no shell, so a SIGKILL is seen as a signal),
// stdout+stderr go to a file that is read back.
#pragma once
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace nimbus::test {

struct AppResult {
  int exit_code = -1;  // when it exited
  int signal = 0;      // when a signal ended it
  std::string output;  // stdout and stderr
};

inline std::string app_path(const std::string& name) {
  namespace fs = std::filesystem;
  return (fs::read_symlink("/proc/self/exe").parent_path().parent_path() / "bin" / name).string();
}

// A program on the PATH ("" when there is none): the GDAL tools the interoperability tests run.
inline std::string on_path(const std::string& name) {
  namespace fs = std::filesystem;
  std::stringstream path(std::getenv("PATH") ? std::getenv("PATH") : "");
  for (std::string dir; std::getline(path, dir, ':');)
    if (!dir.empty() && fs::exists(fs::path(dir) / name)) return (fs::path(dir) / name).string();
  return "";
}

// Runs the program `exe` with `args`, its stdout and stderr captured together.
inline AppResult run_program(const std::string& exe, const std::vector<std::string>& args) {
  namespace fs = std::filesystem;
  const std::string log = (fs::temp_directory_path() / ("nimbus_app_" + std::to_string(getpid()) + ".log")).string();
  std::vector<std::string> all = {exe};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = 0;
  AppResult r;
  const int err = posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (err != 0) {
    r.output = "cannot start " + exe;
    return r;
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  r.output = ss.str();
  fs::remove(log);
  return r;
}

inline AppResult run_app(const std::string& name, const std::vector<std::string>& args) {
  return run_program(app_path(name), args);
}

#ifdef NIMBUS_MPIEXEC
// The app started by mpirun with `ranks` ranks, with what Debian's Open MPI needs in a container run as
// root: no binding to cores, oversubscription allowed, the shared-memory BTL without its single-copy
// mechanism (no ptrace/CMA in containers), and a time limit so that a hang fails instead of waiting.
// Under ASan the ranks run without leak detection: Open MPI unloads its plugins at MPI_Finalize, and
// what they kept for the process's life is then reported from an unknown module, which no suppression
// can name. ASan's and UBSan's other checks stay on, and the same code runs leak-checked in one process.
// Each test process gives its mpirun a session folder base of its own: two mpiruns starting at once
// (ctest -j2) raced to create the shared /tmp/ompi.<host>.<uid> ("File exists", orte_init failed, the
// run lost; seen once in ten paired runs).
inline const std::string& mpi_session_base() {
  struct Base {
    std::string path;
    Base() {
      path = (std::filesystem::temp_directory_path() / ("nimbus_ompi_" + std::to_string(getpid()))).string();
      std::filesystem::create_directories(path);
    }
    ~Base() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static const Base base;
  return base.path;
}
inline std::vector<std::string> mpirun_options() {
  return {"--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "--mca", "btl_vader_single_copy_mechanism",
          "none", "--mca", "orte_tmpdir_base", mpi_session_base(), "--timeout", "300"};
}
// The options of one app context (in mpirun's MPMD form each context needs its own -x).
inline std::vector<std::string> mpirun_context(const std::string& ranks, const std::string& exe) {
  std::vector<std::string> c = {"-np", ranks};
  if (const char* asan = std::getenv("ASAN_OPTIONS"))
    c.insert(c.end(), {"-x", std::string("ASAN_OPTIONS=") + asan + ":detect_leaks=0"});
  c.push_back(exe);
  return c;
}
// run_program_mpi: any program (its path) the same way.
inline AppResult run_program_mpi(int ranks, const std::string& exe, const std::vector<std::string>& args) {
  std::vector<std::string> all = mpirun_options();
  const std::vector<std::string> context = mpirun_context(std::to_string(ranks), exe);
  all.insert(all.end(), context.begin(), context.end());
  all.insert(all.end(), args.begin(), args.end());
  return run_program(NIMBUS_MPIEXEC, all);
}
inline AppResult run_app_mpi(int ranks, const std::string& name, const std::vector<std::string>& args) {
  return run_program_mpi(ranks, app_path(name), args);
}
// One rank per element of `per_rank`, each with its own arguments (mpirun's MPMD form, "a : b").
inline AppResult run_app_mpmd(const std::string& name, const std::vector<std::vector<std::string>>& per_rank) {
  std::vector<std::string> all = mpirun_options();
  for (size_t r = 0; r < per_rank.size(); ++r) {
    if (r) all.push_back(":");
    const std::vector<std::string> context = mpirun_context("1", app_path(name));
    all.insert(all.end(), context.begin(), context.end());
    all.insert(all.end(), per_rank[r].begin(), per_rank[r].end());
  }
  return run_program(NIMBUS_MPIEXEC, all);
}
#endif

// A fresh empty folder under the temp dir, removed when the object goes.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag) {
    path = std::filesystem::temp_directory_path() / ("nimbus_test_" + tag + "_" + std::to_string(getpid()));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& rel) const { return (path / rel).string(); }
};

}  // namespace nimbus::test
