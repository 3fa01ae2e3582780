// resnet.cpp: torchvision's ResNet built from nimbus layers (see resnet.h).
#include "models/resnet.h"

#include "engine/nn/init.h"
#include "engine/ops/activation.h"
#include "engine/ops/arith.h"
#include "engine/ops/pool.h"

namespace nimbus::models {

const char* block_type_name(BlockType t) { return t == BlockType::Bottleneck ? "bottleneck" : "basic"; }

std::string ResNetConfig::str() const {
  return nimbus::str("resnet(", block_type_name(block), " [", blocks[0], ",", blocks[1], ",", blocks[2], ",",
                     blocks[3], "] width ", width, ", ", in_channels, " -> ", classes, ")");
}

ResNetConfig resnet18_config(int in_channels, int classes) {
  return {BlockType::Basic, {2, 2, 2, 2}, 64, in_channels, classes};
}
ResNetConfig resnet50_config(int in_channels, int classes) {
  return {BlockType::Bottleneck, {3, 4, 6, 3}, 64, in_channels, classes};
}

namespace {
// torchvision: kaiming_normal_(w, mode="fan_out", nonlinearity="relu").
std::shared_ptr<Conv2d> conv(int64_t in, int64_t out, int k, int stride, int pad, Rng& rng) {
  auto c = std::make_shared<Conv2d>(in, out, k, stride, pad, /*bias=*/false, rng);
  init::kaiming_normal_(c->weight, rng, 0.0, init::FanMode::FanOut);
  return c;
}
}  // namespace

ResidualBlock::ResidualBlock(BlockType type, int64_t in, int64_t planes, int stride, Rng& rng) : type_(type) {
  const int64_t out = planes * (type == BlockType::Bottleneck ? 4 : 1);
  if (type == BlockType::Basic) {
    conv1_ = register_module("conv1", conv(in, planes, 3, stride, 1, rng));
    bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(planes));
    conv2_ = register_module("conv2", conv(planes, planes, 3, 1, 1, rng));
    bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(planes));
  } else {
    conv1_ = register_module("conv1", conv(in, planes, 1, 1, 0, rng));
    bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(planes));
    conv2_ = register_module("conv2", conv(planes, planes, 3, stride, 1, rng));
    bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(planes));
    conv3_ = register_module("conv3", conv(planes, out, 1, 1, 0, rng));
    bn3_ = register_module("bn3", std::make_shared<BatchNorm2d>(out));
  }
  if (stride != 1 || in != out) {
    downsample_ = register_module("downsample", std::make_shared<Sequential>());
    downsample_->push_back(conv(in, out, 1, stride, 0, rng));
    downsample_->push_back(std::make_shared<BatchNorm2d>(out));
  }
}

// Every conv -> bn pair goes through conv_bn (the main path as one conv_bn_chain): in training a backend
// may compute the batch statistics in the convolution's epilogue, and with bn_relu_prologue() apply each
// batch norm + ReLU in the next convolution's prologue.
Tensor ResidualBlock::forward(const Tensor& x) {
  const ConvBn p1{conv1_.get(), bn1_.get()}, p2{conv2_.get(), bn2_.get()};
  const Tensor h = type_ == BlockType::Bottleneck ? conv_bn_chain({p1, p2, {conv3_.get(), bn3_.get()}}, x, false)
                                                  : conv_bn_chain({p1, p2}, x, false);
  if (!downsample_) return add_relu(h, x);
  auto* ds_conv = dynamic_cast<Conv2d*>(&(*downsample_)[0]);
  auto* ds_bn = downsample_->size() == 2 ? dynamic_cast<BatchNorm2d*>(&(*downsample_)[1]) : nullptr;
  if (!ds_conv || !ds_bn) return add_relu(h, downsample_->forward(x));  // a replaced projection: as it is
  return add_relu(h, conv_bn(*ds_conv, *ds_bn, x, false));
}

ResNet::ResNet(const ResNetConfig& c, Rng& rng) : config_(c) {
  NIMBUS_CHECK(c.width > 0 && c.in_channels > 0 && c.classes > 0, "ResNet: bad configuration ", c.str());
  for (int b : c.blocks) NIMBUS_CHECK(b >= 1, "ResNet: every stage needs at least one block, got ", c.str());
  conv1_ = register_module("conv1", conv(c.in_channels, c.width, 7, 2, 3, rng));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(c.width));
  maxpool_ = std::make_shared<MaxPool2d>(3, 2, 1);  // no state: not registered, as in torch's state_dict
  int64_t in = c.width;
  for (int s = 0; s < 4; ++s) {
    const int64_t planes = int64_t(c.width) << s;
    auto layer = std::make_shared<Sequential>();
    for (int i = 0; i < c.blocks[s]; ++i) {
      layer->push_back(std::make_shared<ResidualBlock>(c.block, in, planes, i == 0 && s > 0 ? 2 : 1, rng));
      in = planes * c.expansion();
    }
    layers_[s] = register_module("layer" + std::to_string(s + 1), layer);
  }
  fc_ = register_module("fc", std::make_shared<Linear>(in, c.classes, true, rng));
}

Tensor ResNet::forward(const Tensor& x) {
  NIMBUS_CHECK(x.defined() && x.ndim() == 4 && x.size(1) == config_.in_channels, "resnet: input ",
               x.defined() ? x.shape().str() : "undefined", " is not (N,", config_.in_channels, ",H,W) for ",
               config_.str());
  Tensor h = maxpool_->forward(conv_bn(*conv1_, *bn1_, x, true));
  for (auto& layer : layers_) h = layer->forward(h);
  return fc_->forward(global_avg_pool(h));
}

}  // namespace nimbus::models
