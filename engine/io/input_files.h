// input_files.h: the files this process has read as inputs, so that no output ever replaces one.
//
// Why: a program's outputs can land on its inputs in ways no argument check foresees: a --data list
// CSV kept in --out where metrics.csv or predictions.csv is written, a folder of cloudy scenes given as
// the output folder of remove_clouds, a --pack path that names a training tile. So the readers of
// user data (GeoTIFFs, the SEN12MS-CR list, true labels) note each file they open, and every writer
// that replaces a file (write_file_atomic, the GeoTIFF writers, the raster pack) refuses one that was
// noted, before it writes anything. Files are told apart by device and inode, so a symlink or another
// spelling of the same path is the same file. A run's own state (its checkpoints, metrics.csv, split
// files), which it reads on --resume and then rewrites, is not noted.
//
// It is the programs' policy, so it is off until a program turns it on (cli::guarded_main does): a
// library user, or a test, may well read a file and then write a new version of it.
#pragma once
#include <string>

namespace nimbus {

// On: from now, note_input records and refuse_if_input refuses. Off: both do nothing (and the record
// is dropped).
void protect_inputs(bool on);
// Notes `path` (an existing file) as an input of this process. Thread-safe (the loader's workers read).
void note_input(const std::string& path);
// Throws nimbus::Error naming `path` when it is a file this process noted as an input.
void refuse_if_input(const std::string& path);

// protect_inputs(true) for a scope (tests), off again after.
struct ProtectInputsScope {
  ProtectInputsScope() { protect_inputs(true); }
  ~ProtectInputsScope() { protect_inputs(false); }
  ProtectInputsScope(const ProtectInputsScope&) = delete;
  ProtectInputsScope& operator=(const ProtectInputsScope&) = delete;
};

}  // namespace nimbus
