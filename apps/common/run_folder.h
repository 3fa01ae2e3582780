// run_folder.h: an output folder that one run owns (the trainers' --out, cloud_impact's --out).
//
// Taking it creates the folder (so a run that cannot write there fails before any work), locks it
// (flock on <dir>/.nimbus.lock: a second run into the same folder fails at once, naming the run
// that holds it, instead of mixing its files with the first one's), and removes the temporary files
// that killed runs left there (`<name>.tmp.<pid>` and `<name>.tmp<pid>_<n>`, from the atomic writers:
// while we hold the lock nobody else writes into the folder). The kernel drops the lock when the
// process ends, however it ends, so a SIGKILLed run never leaves the folder locked. A folder the run
// created and left holding only the lock (it failed before writing anything) is removed at the end,
// and also when a signal stops the run (engine/io/temp_files.h: Ctrl-C, or mpirun stopping rank 0
// because another rank failed at start-up).
#pragma once
#include <memory>
#include <string>

#include "engine/io/temp_files.h"

namespace nimbus::apps {

class RunFolder {
 public:
  // Throws Error naming `dir` when it cannot be created or another run holds it.
  RunFolder(const std::string& dir, const std::string& program);
  ~RunFolder();
  RunFolder(const RunFolder&) = delete;
  RunFolder& operator=(const RunFolder&) = delete;
  const std::string& path() const { return dir_; }
  int removed_temporaries() const { return removed_; }

 private:
  std::string dir_;
  int fd_ = -1;
  int removed_ = 0;
  bool created_ = false;  // the folder did not exist before
  std::unique_ptr<NewFolder> on_signal_;  // while created_: a signal removes the folder if still empty
};

}  // namespace nimbus::apps
