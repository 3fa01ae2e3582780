// test_run_folder.cpp: a trainer's or cloud_impact's run folder: the folder one run owns
// (apps/common/run_folder.h: created at once, locked against a second run, in another process too and
// while another run ends, and cleared of killed runs' temporaries), and the best score a resume reads back.
#include <doctest/doctest.h>

#include <dlfcn.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "apps/common/run_folder.h"
#include "apps/common/training.h"
#include "engine/io/temp_files.h"
#include "kernels/common/error.h"
#include "tests/apps/app_runner.h"
#include "tests/common/child.h"

using namespace nimbus;
using nimbus::apps::RunFolder;
namespace fs = std::filesystem;

namespace {
void touch(const std::string& p) { std::ofstream(p) << "x"; }

// Runs once, inside the next flock() call of this program, before the lock is taken: the test below
// puts another run's ending exactly between a RunFolder's open() of the lock file and its flock().
std::function<void()> before_next_flock;
}  // namespace

// This program's flock(): RunFolder's calls come here (the definition in the executable wins over
// libc's), run the armed action, and go on to libc's flock.
extern "C" int flock(int fd, int op) {
  using Flock = int (*)(int, int);
  static const Flock real = reinterpret_cast<Flock>(::dlsym(RTLD_NEXT, "flock"));
  if (before_next_flock) std::exchange(before_next_flock, nullptr)();
  return real(fd, op);
}

TEST_CASE("run folder: a second run into the same folder is refused, naming the run that holds it") {
  test::TempDir tmp("run_folder");
  const std::string dir = tmp / "out/nested";
  auto first = std::make_unique<RunFolder>(dir, "cloud_impact");
  CHECK(fs::is_directory(dir));
  CHECK_THROWS_WITH_AS(RunFolder(dir, "train_resnet"), doctest::Contains("in use by another run (cloud_impact, pid"),
                       Error);
  // Another process is refused too (flock is per open file, and the kernel sees both).
  const pid_t child = fork();
  if (child == 0) {
    int code = 3;
    try {
      RunFolder other(dir, "child");
      code = 0;
    } catch (const Error&) {
      code = 1;
    }
    _exit(code);
  }
  const int status = test::wait_child(child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 1);
  first.reset();  // released: the folder can be taken again
  CHECK_NOTHROW(RunFolder(dir, "train_resnet"));
}

// The race a folder's removal opens: run B opens .nimbus.lock, run A (which made the folder and wrote
// nothing) unlinks that file, drops its lock and removes the folder, and only then does B's flock()
// succeed, on a file that has lost its name. B must see that and lock the file named there now, or
// a third run C would lock a new .nimbus.lock beside B and share the folder with it.
TEST_CASE("run folder: a run that locks a lock file just removed by a run ending takes the lock again") {
  test::TempDir tmp("run_folder_race");
  const std::string dir = tmp / "out";
  auto a = std::make_unique<RunFolder>(dir, "train_resnet");
  bool a_ended = false;
  before_next_flock = [&] {
    a.reset();  // unlinks the lock file B has open, closes it, removes the empty folder
    a_ended = true;
  };
  const RunFolder b(dir, "train_dsen2cr");
  before_next_flock = nullptr;  // never left armed with references to this test's locals
  CHECK(a_ended);
  REQUIRE(fs::is_directory(dir));
  CHECK_THROWS_WITH_AS(RunFolder(dir, "cloud_impact"),
                       doctest::Contains("in use by another run (train_dsen2cr, pid"), Error);
}

// A run that fails before writing anything leaves no folder behind when it made the folder (a retry, or
// cloud_impact's check for a foreign folder, found a stray one holding .nimbus.lock); a folder that was
// there before, or that holds anything, stays.
TEST_CASE("run folder: a folder the run made and left empty is removed, any other stays") {
  test::TempDir tmp("run_folder_empty");
  const std::string made = tmp / "made", used = tmp / "used", before = tmp / "before";
  { const RunFolder f(made, "train_resnet"); }
  CHECK_FALSE(fs::exists(made));
  {
    const RunFolder f(used, "train_resnet");
    touch(used + "/metrics.csv");
  }
  CHECK(fs::is_regular_file(used + "/metrics.csv"));
  fs::create_directories(before);
  { const RunFolder f(before, "cloud_impact"); }
  CHECK(fs::is_directory(before));
}

// A run stopped by a signal (Ctrl-C while it reads its data, or mpirun stopping rank 0 when another rank
// fails) before writing anything leaves no folder either; a folder holding a file, or one that was
// there before, stays as it is.
TEST_CASE("run folder: a signal removes a folder the run made that holds only its lock and temporaries") {
  test::TempDir tmp("run_folder_signal");
  enum What { kEmpty, kTemporary, kWritten, kExisting };
  for (What what : {kEmpty, kTemporary, kWritten, kExisting}) {
    CAPTURE(int(what));
    const std::string dir = tmp / ("run" + std::to_string(int(what)));
    if (what == kExisting) fs::create_directories(dir);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {  // no doctest from here on, only _exit codes
      for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::signal(sig, SIG_DFL);
      remove_temp_files_on_signals();
      const RunFolder folder(dir, "train_resnet");
      std::unique_ptr<TempFile> guard;
      if (what == kTemporary) {
        guard = std::make_unique<TempFile>(dir + "/last.safetensors.tmp.1");
        touch(dir + "/last.safetensors.tmp.1");
      }
      if (what == kWritten) touch(dir + "/split_train.txt");
      ::raise(SIGTERM);
      ::_exit(4);  // not reached
    }
    const int status = test::wait_child(child);
    CHECK(WIFSIGNALED(status));
    if (WIFSIGNALED(status)) CHECK(WTERMSIG(status) == SIGTERM);
    if (what == kEmpty || what == kTemporary) {
      CHECK_FALSE(fs::exists(dir));
    } else {
      REQUIRE(fs::is_directory(dir));
      CHECK(fs::exists(dir + "/.nimbus.lock"));
      CHECK(fs::exists(dir + "/split_train.txt") == (what == kWritten));
    }
  }
}

TEST_CASE("run folder: killed runs' temporaries are removed, other files kept, and a bad path is named") {
  test::TempDir tmp("run_folder_tmp");
  const std::string dir = tmp / "run";
  fs::create_directories(dir);
  for (const char* f : {"last.safetensors.tmp.12345", "x.tif.tmp999_3", "metrics.csv.tmp.7"}) touch(dir + "/" + f);
  for (const char* f : {"last.safetensors", "notes.tmp.txt", "a.tmp", "b.tmp.12x"}) touch(dir + "/" + f);
  const RunFolder folder(dir, "train_dsen2cr");
  CHECK(folder.removed_temporaries() == 3);
  CHECK_FALSE(fs::exists(dir + "/last.safetensors.tmp.12345"));
  for (const char* f : {"last.safetensors", "notes.tmp.txt", "a.tmp", "b.tmp.12x"}) CHECK(fs::exists(dir + "/" + f));
  touch(tmp / "file");
  CHECK_THROWS_WITH_AS(RunFolder(tmp / "file/sub", "cloud_impact"), doctest::Contains("cannot create the output folder"),
                       Error);
  CHECK_THROWS_WITH_AS(RunFolder(tmp / "file", "cloud_impact"), doctest::Contains("file"), Error);
}

// The trainers read their best score back from a checkpoint's metadata when resuming. NaN or a score
// out of range (an accuracy of 2) is refused: no epoch could beat it, so a stale best.safetensors stayed.
TEST_CASE("metadata_number: a stored score, its absence, and a corrupt or impossible one named with its file") {
  const Metadata m{{"best_val_acc", "0.8125"}, {"best_val_loss", "inf"}, {"bad", "0.5x"}, {"empty", ""},
                   {"nan", "nan"}, {"two", "2"}};
  CHECK(apps::metadata_number(m, "best_val_acc", -1.0, "last.st", -1, 1) == 0.8125);
  // DSen2-CR's start, saved as "inf"
  CHECK(std::isinf(apps::metadata_number(m, "best_val_loss", 0.0, "last.st", 0, INFINITY)));
  CHECK(apps::metadata_number(m, "absent", -1.0, "last.st", -1, 1) == -1.0);
  CHECK_THROWS_WITH_AS(apps::metadata_number(m, "bad", 0.0, "runs/x/last.st", -1, 1),
                       doctest::Contains("runs/x/last.st: metadata \"bad\" is '0.5x', not a number"), Error);
  CHECK_THROWS_AS(apps::metadata_number(m, "empty", 0.0, "last.st", -1, 1), Error);
  CHECK_THROWS_WITH_AS(apps::metadata_number(m, "nan", 0.0, "last.st", -1, 1),
                       doctest::Contains("last.st: metadata \"nan\" is nan, outside [-1, 1]"), Error);
  CHECK_THROWS_WITH_AS(apps::metadata_number(m, "two", 0.0, "last.st", -1, 1),
                       doctest::Contains("metadata \"two\" is 2, outside [-1, 1]"), Error);
  CHECK_THROWS_AS(apps::metadata_number(m, "best_val_acc", 0.0, "last.st", 0.9, 1), Error);
}

// metrics.csv on resume keeps the rows of the epochs the checkpoint holds; a file that is not this run's
// is an error naming it and the line (it used to be dropped and rewritten with the new rows alone). A
// fresh run (keep_through_epoch 0) replaces whatever is there.
TEST_CASE("MetricsCsv: a resume keeps the finished epochs' rows and refuses a file that is not this run's") {
  test::TempDir tmp("metrics_csv");
  const std::string path = tmp / "metrics.csv";
  const std::vector<std::string> cols{"epoch", "lr", "val_acc"};
  auto write = [&](const std::string& text) { std::ofstream(path) << text; };
  auto read = [&] {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  write("epoch,lr,val_acc\n1,0.1,0.5\n2,0.1,0.6\n3,0.1,0.7\n");
  {
    apps::MetricsCsv csv(path, cols, 2);  // the checkpoint holds epoch 2: row 3 is the interrupted epoch's
    csv.append({3, 0.1, 0.75});
  }
  CHECK(read() == "epoch,lr,val_acc\n1,0.1,0.5\n2,0.1,0.6\n3,0.1,0.75\n");
  write("garbage\n1,0.1,0.5\n");
  CHECK_THROWS_WITH_AS(apps::MetricsCsv(path, cols, 2),
                       doctest::Contains((path + ":1: header 'garbage' is not this run's 'epoch,lr,val_acc'").c_str()), Error);
  write("epoch,lr,val_acc\n1,0.1,0.5\n\x01\x02binary\n");
  CHECK_THROWS_WITH_AS(apps::MetricsCsv(path, cols, 2), doctest::Contains((path + ":3: ").c_str()), Error);
  write("epoch,lr,val_acc\n1,0.1\n");
  CHECK_THROWS_WITH_AS(apps::MetricsCsv(path, cols, 2), doctest::Contains("is not a row of this run's 3 columns"), Error);
  {
    apps::MetricsCsv fresh(path, cols, 0);  // a fresh run: the old file is replaced, not read
    fresh.append({1, 0.1, 0.2});
  }
  CHECK(read() == "epoch,lr,val_acc\n1,0.1,0.2\n");
  fs::remove(path);
  CHECK_NOTHROW(apps::MetricsCsv(path, cols, 2));  // none: a new one is started
}
