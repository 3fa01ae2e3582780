// resnet.h: torchvision's ResNet family, name for name, so a torchvision
// state_dict loads strictly and ours loads strictly into torchvision.
//
//   conv1 7x7/2 pad 3 (no bias) -> bn1 -> relu -> maxpool 3/2 pad 1
//   -> layer1..layer4 (stage s: planes = width * 2^s, stride 1 for s = 0, else 2)
//   -> global average pool -> fc (planes_4 * expansion -> classes)
// Blocks (torchvision v1.5: the stride sits on the 3x3 conv):
//   BasicBlock (expansion 1):  conv1 3x3/s, bn1, relu, conv2 3x3, bn2, + identity, relu
//   Bottleneck (expansion 4):  conv1 1x1, bn1, relu, conv2 3x3/s, bn2, relu, conv3 1x1, bn3, + identity, relu
//   identity = downsample(x) = conv1x1/s + bn ("layerX.0.downsample.0/1") when the
//   stride or the channel count changes, else x.
// torchvision's members: resnet18 = Basic [2,2,2,2], resnet34 = Basic [3,4,6,3],
// resnet50 = Bottleneck [3,4,6,3], all width 64 (groups 1, width_per_group 64).
// Init as torchvision: convs kaiming_normal(fan_out, relu), BN weight 1 bias 0,
// fc PyTorch's default Linear init; no zero-init of the last BN.
// Shapes: forward (N, in_channels, H, W) normalised input -> (N, classes) logits.
#pragma once
#include <array>
#include <memory>
#include <string>

#include "data/sentinel2.h"
#include "engine/nn/layers.h"
#include "engine/random.h"

namespace nimbus::models {

enum class BlockType { Basic, Bottleneck };
const char* block_type_name(BlockType t);  // "basic" | "bottleneck"

struct ResNetConfig {
  BlockType block = BlockType::Bottleneck;
  std::array<int, 4> blocks = {3, 4, 6, 3};  // blocks per stage
  int width = 64;                            // planes of stage 1 (conv1's output channels)
  int in_channels = data::kS2Bands;
  int classes = 10;
  int expansion() const { return block == BlockType::Bottleneck ? 4 : 1; }
  int features() const { return width * 8 * expansion(); }  // fc's input size
  std::string str() const;  // "resnet(bottleneck [3,4,6,3] width 64, 13 -> 10)"
  bool operator==(const ResNetConfig&) const = default;
};

ResNetConfig resnet18_config(int in_channels = data::kS2Bands, int classes = 10);
ResNetConfig resnet50_config(int in_channels = data::kS2Bands, int classes = 10);

// One residual block (either type); children named as torchvision's.
class ResidualBlock : public UnaryModule {
 public:
  ResidualBlock(BlockType type, int64_t in, int64_t planes, int stride, Rng& rng);
  Tensor forward(const Tensor& x) override;

 private:
  BlockType type_;
  std::shared_ptr<Conv2d> conv1_, conv2_, conv3_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_, bn3_;
  std::shared_ptr<Sequential> downsample_;  // null when the identity needs no projection
};

class ResNet : public Module {
 public:
  explicit ResNet(const ResNetConfig& config, Rng& rng = global_rng());
  Tensor forward(const Tensor& x);  // (N, in_channels, H, W) normalised -> (N, classes) logits
  const ResNetConfig& config() const { return config_; }

 private:
  ResNetConfig config_;
  std::shared_ptr<Conv2d> conv1_;
  std::shared_ptr<BatchNorm2d> bn1_;
  std::shared_ptr<MaxPool2d> maxpool_;
  std::array<std::shared_ptr<Sequential>, 4> layers_;
  std::shared_ptr<Linear> fc_;
};

}  // namespace nimbus::models
