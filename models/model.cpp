// model.cpp: model configuration <-> JSON, and building a model from it.
#include "models/model.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "engine/io/json.h"

namespace nimbus::models {

std::string ModelConfig::to_json() const {
  nlohmann::ordered_json j;
  if (arch == Arch::DSen2CR) {
    j = {{"arch", "dsen2cr"}, {"blocks", dsen2cr.blocks}, {"features", dsen2cr.features}, {"sar", dsen2cr.sar}};
  } else {
    const auto& r = resnet;
    j = {{"arch", "resnet"},     {"block", block_type_name(r.block)}, {"blocks", r.blocks},
         {"width", r.width},     {"in_channels", r.in_channels},      {"classes", r.classes}};
  }
  return j.dump();
}

namespace {
struct Reader {
  const json::Value& v;
  const std::string& where;
  const json::Value& field(const char* key, json::Value::Type type, const char* what) const {
    const json::Value* f = v.get(key);
    NIMBUS_CHECK(f && f->is(type), where, ": model config needs \"", key, "\" (", what, ")");
    return *f;
  }
  int integer(const char* key, int lo, int hi) const {
    return as_int(field(key, json::Value::Type::Number, "an integer"), key, lo, hi);
  }
  // An integer in [lo, hi]: a file's word is checked before a model is built from it (blocks = 1e8
  // once kept classify building for minutes; a width of 1e8 allocated until the allocator failed).
  int as_int(const json::Value& f, const char* key, int lo, int hi) const {
    NIMBUS_CHECK(f.is(json::Value::Type::Number) && f.num == std::floor(f.num) && std::fabs(f.num) < 1e9, where,
                 ": model config field \"", key, "\" must be an integer");
    NIMBUS_CHECK(f.num >= lo && f.num <= hi, where, ": model config field \"", key, "\" is ", int64_t(f.num),
                 ", outside [", lo, ", ", hi, "]");
    return int(f.num);
  }
};

}  // namespace

ModelConfig ModelConfig::from_json(const std::string& text, const std::string& where) {
  json::Value v;
  try {
    v = json::parse(text);
  } catch (const Error& e) {
    throw Error(nimbus::str(where, ": model config is not valid JSON: ", e.what()));
  }
  NIMBUS_CHECK(v.is(json::Value::Type::Object), where, ": model config must be a JSON object");
  Reader r{v, where};
  const std::string arch = r.field("arch", json::Value::Type::String, "\"resnet\" or \"dsen2cr\"").s;
  ModelConfig c;
  if (arch == "dsen2cr") {
    c.arch = Arch::DSen2CR;
    c.dsen2cr.blocks = r.integer("blocks", 0, kMaxDsBlocks);
    c.dsen2cr.features = r.integer("features", 1, kMaxDsFeatures);
    c.dsen2cr.sar = r.field("sar", json::Value::Type::Bool, "true or false").b;
    return c;
  }
  NIMBUS_CHECK(arch == "resnet", where, ": unknown model arch \"", arch, "\" (expected resnet or dsen2cr)");
  c.arch = Arch::ResNet;
  const std::string block = r.field("block", json::Value::Type::String, "\"basic\" or \"bottleneck\"").s;
  NIMBUS_CHECK(block == "basic" || block == "bottleneck", where, ": unknown block \"", block,
               "\" (expected basic or bottleneck)");
  c.resnet.block = block == "basic" ? BlockType::Basic : BlockType::Bottleneck;
  const json::Value& blocks = r.field("blocks", json::Value::Type::Array, "four integers");
  NIMBUS_CHECK(blocks.arr.size() == 4, where, ": model config \"blocks\" needs four integers, got ",
               blocks.arr.size());
  for (int s = 0; s < 4; ++s) c.resnet.blocks[s] = r.as_int(blocks.arr[s], "blocks", 0, kMaxStageBlocks);
  c.resnet.width = r.integer("width", 1, kMaxWidth);
  c.resnet.in_channels = r.integer("in_channels", 1, kMaxInChannels);
  c.resnet.classes = r.integer("classes", 1, kMaxClasses);
  return c;
}

std::string ModelConfig::str() const { return arch == Arch::ResNet ? resnet.str() : dsen2cr.str(); }

Module& Model::module() const {
  if (classifier) return *classifier;
  NIMBUS_CHECK(dsen2cr, "Model: empty (built from no configuration)");
  return *dsen2cr;
}

int64_t min_parameter_count(const ModelConfig& config) {
  if (config.arch == Arch::DSen2CR) {  // head 3x3 (in -> F), B blocks of two 3x3 (F -> F), tail 3x3 (F -> 13)
    const DSen2CRConfig& c = config.dsen2cr;
    const int64_t F = c.features, in = kS2Bands + (c.sar ? kS1Bands : 0);
    return 9 * (in * F + 2 * int64_t(c.blocks) * F * F + F * kS2Bands);
  }
  const ResNetConfig& c = config.resnet;  // conv1 7x7, each block's convs (downsample included), fc
  int64_t n = 49 * int64_t(c.in_channels) * c.width, in = c.width;
  for (int s = 0; s < 4; ++s) {
    const int64_t planes = int64_t(c.width) << s, out = planes * c.expansion();
    for (int i = 0; i < c.blocks[size_t(s)]; ++i) {
      n += c.block == BlockType::Bottleneck ? in * planes + 9 * planes * planes + planes * out
                                             : 9 * in * planes + 9 * planes * planes;
      if (i == 0 && (s > 0 || in != out)) n += in * out;  // the 1x1 projection of the shortcut
      in = out;
    }
  }
  return n + in * c.classes;
}

Model build_model(const ModelConfig& config, Rng& rng) {
  Model m{config, nullptr, nullptr};
  if (config.arch == Arch::ResNet) m.classifier = std::make_shared<Classifier>(config.resnet, rng);
  else m.dsen2cr = std::make_shared<DSen2CR>(config.dsen2cr, rng);
  return m;
}

}  // namespace nimbus::models
