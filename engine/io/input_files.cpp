// input_files.cpp: the set of (device, inode) of the files read as inputs (see input_files.h).
#include "engine/io/input_files.h"

#include <sys/stat.h>

#include <mutex>
#include <set>
#include <utility>

#include "kernels/common/error.h"

namespace nimbus {

namespace {
std::mutex mu;
bool on = false;  // guarded by mu
std::set<std::pair<dev_t, ino_t>>& inputs() {
  static std::set<std::pair<dev_t, ino_t>> s;
  return s;
}
}  // namespace

void protect_inputs(bool enable) {
  std::lock_guard<std::mutex> lock(mu);
  on = enable;
  if (!on) inputs().clear();
}

void note_input(const std::string& path) {
  {
    std::lock_guard<std::mutex> lock(mu);
    if (!on) return;
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return;
  std::lock_guard<std::mutex> lock(mu);
  if (on) inputs().emplace(st.st_dev, st.st_ino);
}

void refuse_if_input(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return;
  std::lock_guard<std::mutex> lock(mu);
  NIMBUS_CHECK(!on || !inputs().count({st.st_dev, st.st_ino}), path,
               ": is one of this run's input files (read earlier): refusing to overwrite it; choose another output");
}

}  // namespace nimbus
