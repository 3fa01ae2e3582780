/* tiny_models.h: the tiny model configurations the emulator tests train (the emulator is slow: a
 * ResNet-50-shaped network with one bottleneck per stage and width 4, 13 bands in, 10 classes). */
#pragma once
#include "models/resnet.h"

namespace nimbus::test {

inline models::ResNetConfig tiny_resnet() {
  models::ResNetConfig cfg;
  cfg.block = models::BlockType::Bottleneck;
  cfg.blocks = {1, 1, 1, 1};
  cfg.width = 4;
  cfg.in_channels = 13;
  cfg.classes = 10;
  return cfg;
}

}  // namespace nimbus::test
