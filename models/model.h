// model.h: "a model" as the apps see it: a configuration (JSON-serialisable,
// stored in every checkpoint) and the network it builds.
//
//   {"arch":"resnet","block":"bottleneck","blocks":[3,4,6,3],"width":64,"in_channels":13,"classes":10}
//   {"arch":"dsen2cr","blocks":16,"features":256,"sar":true}
// A ResNet config builds a Classifier (ResNet + input normalisation);
// a DSen2-CR config builds a DSen2CR.
#pragma once
#include <memory>
#include <string>

#include "models/classifier.h"
#include "models/dsen2cr.h"

namespace nimbus::models {

enum class Arch { ResNet, DSen2CR };

// The bounds of a configuration read from a file or a command line (ModelConfig::from_json, the
// trainers' options): well beyond every published ResNet (ResNet-152's stages hold 3, 8, 36, 3
// blocks; wide ResNets double the width of 64) and DSen2-CR (B = 16 blocks of F = 256 features), far
// below what would exhaust a machine's memory at load.
constexpr int kMaxStageBlocks = 64, kMaxWidth = 512, kMaxInChannels = 256, kMaxClasses = 100000;
constexpr int kMaxDsBlocks = 128, kMaxDsFeatures = 1024;

struct ModelConfig {
  Arch arch = Arch::ResNet;
  ResNetConfig resnet;    // used when arch == ResNet
  DSen2CRConfig dsen2cr;  // used when arch == DSen2CR
  static ModelConfig of(const ResNetConfig& c) { return {Arch::ResNet, c, {}}; }
  static ModelConfig of(const DSen2CRConfig& c) { return {Arch::DSen2CR, {}, c}; }
  std::string to_json() const;
  // Throws an Error naming `where` (a file, an option) and the bad field.
  static ModelConfig from_json(const std::string& text, const std::string& where = "model config");
  std::string str() const;  // the human-readable form of the active config
};

struct Model {
  ModelConfig config;
  std::shared_ptr<Classifier> classifier;  // set when config.arch == ResNet
  std::shared_ptr<DSen2CR> dsen2cr;        // set when config.arch == DSen2CR
  Module& module() const;                  // whichever is set
};

Model build_model(const ModelConfig& config, Rng& rng = global_rng());

// A lower bound of the float32 values a model of this configuration holds (its convolution and
// linear weights), computed without building it: a checkpoint holding fewer values cannot be this
// model, and is refused before the build allocates what the file only claims.
int64_t min_parameter_count(const ModelConfig& config);

}  // namespace nimbus::models
