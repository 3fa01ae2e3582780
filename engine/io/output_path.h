// output_path.h: the file that a writer renaming a temporary into place replaces.
//
// Why: rename() replaces whatever the path names. A symbolic link given as the output lost the link and
// left the file it named as it was; a device lost the device (as root, remove_clouds --out /dev/null
// replaced the system's /dev/null with a 1.7 MB plain file, and exited 0). So every atomic writer
// (write_file_atomic, the GeoTIFF writers, the raster pack, the figures) writes where this says: a link
// is followed, so its file is replaced and the link stays; a path that exists and is not a regular
// file after the links (a folder, a device, a pipe, a socket) is refused before anything is written.
// (write_file_atomic writes a device or a pipe in place instead: its output is a stream.)
#pragma once
#include <string>

namespace nimbus {

// `path`, or the file the symbolic links at `path` lead to; throws nimbus::Error naming `path` and
// what it is when that exists and is not a regular file. A link in a sticky world-writable folder (/tmp)
// owned neither by this user nor by the folder's owner is not followed (the kernel's protected_symlinks
// rule, which following the link by hand would bypass: another user's link could aim a root run at
// /etc).
std::string atomic_output_path(const std::string& path);

// Before the rename: the temporary `tmp` takes the permission bits of the file it replaces at `target`
// (a 0600 file stays 0600); nothing when there is none yet.
void keep_target_mode(const std::string& tmp, const std::string& target);

// After the rename: the folder holding `target` is flushed too (fsync on the folder), so that after a
// power cut the name leads to the new file, not the one it replaced (the file itself was flushed before
// the rename). Best effort: a file system that cannot flush a folder (EINVAL) is left as it is.
void sync_folder_of(const std::string& target);

}  // namespace nimbus
