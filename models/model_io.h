// model_io.h: model checkpoints that rebuild their own model.
//
// save_model writes engine/io/checkpoint.h's file (weights, buffers, optional
// optimiser state, checksum) plus metadata:
//   "model"  the ModelConfig JSON (model.h)     "epoch"  when given
//   "rng"    the Rng state when given            + the caller's extra keys
// load_model(path) rebuilds the right model from the file alone. It also takes
// a file holding only PyTorch's tensors (no metadata, e.g. a torchvision
// state_dict saved as safetensors): the configuration is then inferred from the
// tensor names and shapes (infer_config). Missing input_norm.* in such a file
// leaves mean 0 / std 1 and has_input_norm false.
// Every error names the file; tensor mismatches are listed all at once.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/io/safetensors.h"
#include "engine/optim/optimizer.h"
#include "models/model.h"

namespace nimbus::models {

struct SaveOptions {
  const Optimizer* optimizer = nullptr;  // saved as "optim.*" when given
  int64_t epoch = -1;                    // saved when >= 0
  const Rng* rng = nullptr;              // saved when given
  Metadata extra;                        // the caller's own keys (not "model", "epoch", "rng")
};

void save_model(const std::string& path, const Model& model, const SaveOptions& options = {});

struct LoadedModel {
  Model model;              // in eval mode, on the CPU
  Metadata metadata;        // every non-reserved metadata entry of the file
  int64_t epoch = -1;       // -1 when the file has none
  bool from_pytorch = false;   // no nimbus metadata: configuration inferred from the tensors
  bool has_input_norm = true;  // false: a classifier file without input_norm.* tensors
};

LoadedModel load_model(const std::string& path);

// Resuming: loads weights, buffers and optimiser state into an existing model
// and its optimiser (the file's config must equal the model's), restores `rng`
// when given and the file has one. Returns the saved epoch (-1 if none).
int64_t load_training_state(const std::string& path, Model& model, Optimizer& optimizer, Rng* rng = nullptr);

// Fine-tuning (the trainers' --init): copies the weights of the model file `path` into `model`, which a
// trainer has just built. The file is any that load_model reads (a nimbus checkpoint, a PyTorch
// state_dict saved as safetensors, a converted Keras DSen2-CR), and names and shapes decide: every
// tensor of `model` must come from the file, with its shape, except a classifier's fc.* (a head for
// other classes, or none at all: a backbone) and input_norm.* (PyTorch files have none), which then
// keep the model's own values. The file may hold nothing else (a nimbus checkpoint's optimiser state
// aside): another architecture is refused, not half-loaded. Values as load_model checks them (finite,
// variances >= 0, stds > 0). Errors name the file and each kind of problem with its tensors (the first 8
// of each, and how many more); `model` is then unchanged.
struct InitReport {
  int copied = 0;                 // tensors taken from the file
  std::vector<std::string> kept;  // the model's own (fc.*, input_norm.*), with why
  bool input_norm = false;        // a classifier's input_norm came from the file
  Metadata metadata;              // the file's metadata, less the nimbus.* and optim.* entries
  uint64_t content_fnv1a = 0;     // of the file's bytes, as this read them (engine/io/fnv1a.h)
};
InitReport init_from(const std::string& path, Model& model);

// The configuration a set of PyTorch-named tensors belongs to (ResNet: block
// type from conv3, blocks per stage from layerX.N, width from conv1, input
// channels from conv1, classes from fc; DSen2-CR: B from blocks.N, F from head,
// SAR from head's input channels). `where` names the file in errors.
ModelConfig infer_config(const SafetensorsFile& file, const std::string& where);

}  // namespace nimbus::models
