// temp_files.h: the temporary files the atomic writers have open, removed when the process is
// interrupted.
//
// Why: every writer of a result (write_file_atomic, the GeoTIFF writers, the raster pack) writes
// `<path>.tmp<pid>...` and renames it into place, so a reader never sees half a file. A Ctrl-C or a
// `kill` in between (remove_clouds writes a granule's 3 GB for minutes) left the temporary behind,
// and nothing outside a run folder (apps/common/run_folder.h) ever removed it. So each writer holds a
// TempFile while its temporary exists, and the handlers that remove_on_signals() installs for SIGINT,
// SIGTERM and SIGHUP unlink every such file, then die of the same signal (the exit status a shell or
// mpirun expects). SIGKILL cannot be caught: a run folder still clears what a killed run left.
//
// The handler only reads a fixed table and calls unlink(), both async-signal-safe; a TempFile takes a
// slot of the table for its life (64 at once at most: the writers hold one or two each).
//
// The same handlers remove a NewFolder that holds nothing but its lock file when the signal comes: a
// run folder (apps/common/run_folder.h) that a run made and was stopped in before writing anything. A
// run ending normally removes such a folder itself; this is for the run that is stopped: Ctrl-C while
// the data is read, or rank 0 of a data-parallel run when another rank fails at start-up (MPI_Abort:
// Open MPI sends SIGTERM, then SIGKILL a second later).
#pragma once
#include <string>

namespace nimbus {

class TempFile {
 public:
  explicit TempFile(const std::string& path);  // registers `path` (the file need not exist yet)
  ~TempFile();                                 // unregisters it (it was renamed, or the writer removed it)
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

 private:
  int slot_ = -1;  // -1: the table was full or the path too long (the file is then not guarded)
};

class NewFolder {
 public:
  // Registers `dir`, removed on a signal if it then holds only `lock_name` (removed too) or nothing.
  // One at a time: a second NewFolder while one lives is not guarded.
  NewFolder(const std::string& dir, const std::string& lock_name);
  ~NewFolder();
  NewFolder(const NewFolder&) = delete;
  NewFolder& operator=(const NewFolder&) = delete;

 private:
  bool held_ = false;
};

// Installs the handlers, once per process; signals whose handler is not the default (an MPI runtime's,
// a shell that ignores SIGHUP) are left alone. cli::guarded_main calls it.
void remove_temp_files_on_signals();

}  // namespace nimbus
