// checkpoint.h: save and resume training: weights, buffers, optimiser state and
// metadata in one safetensors file (written atomically, see safetensors.h).
//
// Layout of the file:
//   "<name>"                  every tensor of module.state_dict(), under PyTorch's names
//   "optim.<param>.<slot>"    optimiser tensors, "optim.<param>.step", "optim.step", ...
//   metadata: the caller's strings (epoch, config JSON, rng state, ...),
//             "optim.type", "optim.lr", ... (the optimiser's info),
//             "nimbus.checksum": FNV-1a 64 over every tensor's name, shape and
//             bytes and every other metadata entry, so a flipped bit anywhere is
//             an Error at load rather than silently different weights.
// Keys starting with "optim." or "nimbus." are reserved.
#pragma once
#include <string>

#include "engine/io/safetensors.h"
#include "engine/nn/module.h"
#include "engine/optim/optimizer.h"
#include "engine/random.h"

namespace nimbus {

void save_checkpoint(const std::string& path, const Module& module, const Optimizer* optimizer = nullptr,
                     const Metadata& metadata = {});

// Loads into `module` (and `optimizer` when given; the file must then hold
// optimiser state of the same type). Returns the caller's metadata. Any problem
// throws an Error naming the file; module and optimiser are then unchanged.
Metadata load_checkpoint(const std::string& path, Module& module, Optimizer* optimizer = nullptr, bool strict = true);
// The same from a file already read (load_safetensors(path)): one read when the caller looks at the
// file before building the module (models/model_io.cpp).
Metadata load_checkpoint(const SafetensorsFile& file, const std::string& path, Module& module,
                         Optimizer* optimizer = nullptr, bool strict = true);

// Throws an Error naming `path` unless `file` is a nimbus checkpoint whose checksum matches: the
// first thing to check, before anything is built from the file's metadata.
void verify_checkpoint(const SafetensorsFile& file, const std::string& path);

// An Rng's state as text for the metadata, and back (throws on malformed text).
std::string rng_state_to_string(const Rng& rng);
void rng_state_from_string(Rng& rng, const std::string& text);

}  // namespace nimbus
