// run_folder.cpp: see run_folder.h.
#include "apps/common/run_folder.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "kernels/common/error.h"

namespace nimbus::apps {

namespace fs = std::filesystem;

namespace {
// "<name>.tmp.<digits>" (write_file_atomic) or "<name>.tmp<digits>_<digits>" (the GeoTIFF writer).
// By hand: std::regex trips GCC 12's -Wmaybe-uninitialized under ASan.
bool is_temporary(const std::string& name) {
  const size_t at = name.rfind(".tmp");
  if (at == std::string::npos || at == 0) return false;
  const std::string rest = name.substr(at + 4);
  auto digits = [](const std::string& t) {
    return !t.empty() && t.find_first_not_of("0123456789") == std::string::npos;
  };
  if (!rest.empty() && rest[0] == '.') return digits(rest.substr(1));
  const size_t us = rest.find('_');
  return us != std::string::npos && digits(rest.substr(0, us)) && digits(rest.substr(us + 1));
}
}  // namespace

RunFolder::RunFolder(const std::string& dir, const std::string& program) : dir_(dir) {
  NIMBUS_CHECK(!dir.empty(), program, ": an output folder is required");
  std::error_code ec;
  created_ = !fs::exists(dir, ec);
  fs::create_directories(dir, ec);
  NIMBUS_CHECK(!ec && fs::is_directory(dir), dir, ": cannot create the output folder (",
               ec ? ec.message() : "a file of that name exists", ")");
  const std::string lock = dir + "/.nimbus.lock";
  // A run ending removes the lock file of a folder it made and left empty (see the destructor), so a
  // lock taken on a file that has just lost its name is no lock: take it again on the file there now.
  for (int attempt = 0;; ++attempt) {
    fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    NIMBUS_CHECK(fd_ >= 0, lock, ": cannot open the folder's lock file: ", std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      char holder[256] = {};
      const ssize_t n = ::pread(fd_, holder, sizeof holder - 1, 0);
      ::close(fd_);
      fd_ = -1;
      NIMBUS_CHECK(err != EWOULDBLOCK, dir, ": in use by another run (", n > 0 ? holder : "unknown",
                   "); wait for it to finish or choose another output folder");
      throw Error(str(lock, ": cannot lock the output folder: ", std::strerror(err)));
    }
    struct stat held {}, named {};
    if (::fstat(fd_, &held) == 0 && ::stat(lock.c_str(), &named) == 0 && held.st_dev == named.st_dev &&
        held.st_ino == named.st_ino)
      break;
    ::close(fd_);
    fd_ = -1;
    NIMBUS_CHECK(attempt < 8, lock, ": the lock file keeps being replaced; is another run starting and ending there?");
    std::error_code again;
    fs::create_directories(dir, again);  // the ending run may have removed the folder too
  }
  if (created_) on_signal_ = std::make_unique<NewFolder>(dir, ".nimbus.lock");
  const std::string me = str(program, ", pid ", ::getpid());
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, me.data(), me.size(), 0) != ssize_t(me.size())) {
    // The note is for the message another run prints; the lock holds without it.
  }
  // What killed runs left behind: our atomic writers' temporaries, in this folder only.
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    if (!e.is_regular_file(ec) || !is_temporary(e.path().filename().string())) continue;
    if (fs::remove(e.path(), ec)) ++removed_;
  }
}

RunFolder::~RunFolder() {
  if (fd_ < 0) return;
  on_signal_.reset();  // from here the destructor decides
  // A folder this run made and left holding nothing but its lock (the run failed before writing
  // anything: a refused option, unreadable data) goes again, so a retry finds no stray folder. The
  // lock file is removed while still held, then the folder (rmdir: only if still empty).
  bool only_lock = created_;
  std::error_code ec;
  if (only_lock)
    for (const fs::directory_entry& e : fs::directory_iterator(dir_, ec))
      if (e.path().filename() != ".nimbus.lock") only_lock = false;
  if (only_lock && !ec) ::unlink((dir_ + "/.nimbus.lock").c_str());
  ::close(fd_);  // closing drops the flock
  if (only_lock && !ec) ::rmdir(dir_.c_str());
}

}  // namespace nimbus::apps
