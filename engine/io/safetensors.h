// safetensors.h: read and write checkpoints in the safetensors format.
//
// Format (https://huggingface.co/docs/safetensors): 8-byte little-endian
// header length N, then N bytes of JSON
//   {"__metadata__": {"k": "v", ...}, "name": {"dtype": "F32", "shape": [..],
//    "data_offsets": [begin, end]}, ...}
// then the raw little-endian tensor bytes, offsets relative to the end of the header.
//
// We write F32 only. We read F32, F64, F16, BF16, I64, I32, I16, U8 and BOOL and convert to
// float32 (PyTorch fixtures carry int64 labels; state_dicts carry an int64
// num_batches_tracked). Every read is bounds-checked: a truncated or corrupt
// file gives an Error naming the file and the problem, never a crash.
//
// Writes go to "<path>.tmp.<pid>" and are renamed into place, so a crash or a
// full disk never leaves a half-written checkpoint under the real name.
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace nimbus {

using Metadata = std::map<std::string, std::string>;

struct SafetensorsFile {
  std::vector<std::pair<std::string, Tensor>> tensors;  // in file order, on the CPU
  std::map<std::string, std::string> dtypes;            // original dtype per tensor name
  Metadata metadata;
  const Tensor* find(const std::string& name) const;
  const Tensor& at(const std::string& name) const;  // throws naming the missing tensor
};

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const Metadata& metadata = {});
// content_fnv1a, when given, receives the FNV-1a 64 (engine/io/fnv1a.h) of the file's bytes as read:
// what a run records of its --init file, from the same read that loaded it.
SafetensorsFile load_safetensors(const std::string& path, uint64_t* content_fnv1a = nullptr);

// Write `bytes` to path atomically (temporary file + fsync + rename). Used by
// every writer of outputs in nimbus. A path that exists and is not a regular
// file (a device, a pipe, /dev/stdout) is written directly instead: a rename
// would replace it. Every failure (a full disk included) is an Error naming path.
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace nimbus
