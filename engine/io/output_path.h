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
// what it is when that exists and is not a regular file.
std::string atomic_output_path(const std::string& path);

}  // namespace nimbus
