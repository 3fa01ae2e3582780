// output_path.cpp: see output_path.h.
#include "engine/io/output_path.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "kernels/common/error.h"

namespace nimbus {

namespace {
const char* kind_of(mode_t m) {
  if (S_ISDIR(m)) return "a folder";
  if (S_ISCHR(m) || S_ISBLK(m)) return "a device";
  if (S_ISFIFO(m)) return "a pipe";
  if (S_ISSOCK(m)) return "a socket";
  return "not a regular file";
}
}  // namespace

std::string atomic_output_path(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {  // follows links
    NIMBUS_CHECK(S_ISREG(st.st_mode), path, ": is ", kind_of(st.st_mode),
                 ", not a file this program may replace (it writes a temporary file and renames it into place); "
                 "choose a file name");
  }
  // Links (a chain, or one that names no file yet): the path at their end, the links kept.
  std::filesystem::path p = path;
  std::error_code ec;
  for (int hops = 0; std::filesystem::is_symlink(p, ec); ++hops) {
    NIMBUS_CHECK(hops < 40, path, ": too many levels of symbolic links");
    struct stat link {}, dir {};
    const std::string parent = p.parent_path().empty() ? std::string(".") : p.parent_path().string();
    if (::lstat(p.c_str(), &link) == 0 && ::stat(parent.c_str(), &dir) == 0 && (dir.st_mode & S_ISVTX) &&
        (dir.st_mode & S_IWOTH))
      NIMBUS_CHECK(link.st_uid == ::geteuid() || link.st_uid == dir.st_uid, path, ": ", p.string(),
                   " is another user's symbolic link in the shared folder ", parent,
                   ": not followed (choose a path of your own)");
    const std::filesystem::path to = std::filesystem::read_symlink(p, ec);
    NIMBUS_CHECK(!ec, path, ": cannot read the symbolic link ", p.string(), ": ", ec.message());
    p = to.is_absolute() ? to : p.parent_path() / to;
  }
  return p.string();
}

void keep_target_mode(const std::string& tmp, const std::string& target) {
  struct stat st {};
  if (::stat(target.c_str(), &st) == 0) (void)::chmod(tmp.c_str(), st.st_mode & 07777);
}

void sync_folder_of(const std::string& target) {
  const std::string folder = std::filesystem::path(target).parent_path().string();
  const int fd = ::open(folder.empty() ? "." : folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

}  // namespace nimbus
