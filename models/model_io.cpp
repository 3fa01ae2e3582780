// model_io.cpp: save/load of self-describing model checkpoints (see model_io.h).
#include "models/model_io.h"

#include <cmath>
#include <map>
#include <set>

#include "engine/io/checkpoint.h"

namespace nimbus::models {

namespace {
const char* const kModelKey = "model";
const char* const kEpochKey = "epoch";
const char* const kRngKey = "rng";
const char* const kInputNorm[] = {"input_norm.mean", "input_norm.std"};

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

int64_t parse_epoch(const Metadata& meta, const std::string& path) {
  auto it = meta.find(kEpochKey);
  if (it == meta.end()) return -1;
  try {
    size_t used = 0;
    long long e = std::stoll(it->second, &used);
    if (used == it->second.size() && e >= 0) return e;
  } catch (const std::exception&) {
  }
  throw Error(str(path, ": metadata \"epoch\" is not a non-negative integer: '", it->second, "'"));
}

// Largest N + 1 over names "<prefix>N.<rest>"; 0 when there is none.
int count_indexed(const SafetensorsFile& f, const std::string& prefix) {
  int n = 0;
  for (const auto& [name, t] : f.tensors) {
    if (!starts_with(name, prefix)) continue;
    size_t dot = name.find('.', prefix.size());
    std::string idx = name.substr(prefix.size(), dot == std::string::npos ? std::string::npos : dot - prefix.size());
    if (idx.empty() || idx.find_first_not_of("0123456789") != std::string::npos || idx.size() > 6) continue;
    n = std::max(n, std::stoi(idx) + 1);
  }
  return n;
}
}  // namespace

ModelConfig infer_config(const SafetensorsFile& f, const std::string& where) {
  if (const Tensor* head = f.find("head.weight")) {
    NIMBUS_CHECK(head->ndim() == 4, where, ": head.weight ", head->shape().str(), " is not a conv weight (F,C,3,3)");
    const int64_t cin = head->size(1);
    NIMBUS_CHECK(cin == kS2Bands || cin == kS2Bands + kS1Bands, where, ": head.weight ", head->shape().str(),
                 " takes ", cin, " channels; DSen2-CR takes ", kS2Bands, " (S2) or ", kS2Bands + kS1Bands, " (S2 + S1)");
    DSen2CRConfig c;
    c.features = int(head->size(0));
    c.sar = cin == kS2Bands + kS1Bands;
    c.blocks = count_indexed(f, "blocks.");
    return ModelConfig::of(c);
  }
  const Tensor* conv1 = f.find("conv1.weight");
  const Tensor* fc = f.find("fc.weight");
  NIMBUS_CHECK(conv1 && fc, where, ": cannot tell the architecture: no head.weight (DSen2-CR) and no ",
               "conv1.weight + fc.weight (ResNet)");
  NIMBUS_CHECK(conv1->ndim() == 4 && fc->ndim() == 2, where, ": conv1.weight ", conv1->shape().str(),
               " / fc.weight ", fc->shape().str(), " are not a ResNet's (w,C,7,7) / (classes,features)");
  ResNetConfig c;
  c.block = f.find("layer1.0.conv3.weight") ? BlockType::Bottleneck : BlockType::Basic;
  for (int s = 0; s < 4; ++s) c.blocks[s] = count_indexed(f, "layer" + std::to_string(s + 1) + ".");
  c.width = int(conv1->size(0));
  c.in_channels = int(conv1->size(1));
  c.classes = int(fc->size(0));
  for (int s = 0; s < 4; ++s)
    NIMBUS_CHECK(c.blocks[s] > 0, where, ": ResNet tensors have no layer", s + 1, ".0.* (", c.str(), ")");
  return ModelConfig::of(c);
}

void save_model(const std::string& path, const Model& model, const SaveOptions& o) {
  Metadata meta = o.extra;
  for (const char* k : {kModelKey, kEpochKey, kRngKey})
    NIMBUS_CHECK(!meta.count(k), path, ": metadata key \"", k, "\" is reserved by save_model");
  meta[kModelKey] = model.config.to_json();
  if (o.epoch >= 0) meta[kEpochKey] = std::to_string(o.epoch);
  if (o.rng) meta[kRngKey] = rng_state_to_string(*o.rng);
  save_checkpoint(path, model.module(), o.optimizer, meta);
}

namespace {
// The NaN policy for weights: a model whose tensors hold NaN or +-inf, a batch
// norm's negative running variance, or an input normalisation's std that is not positive would turn
// every prediction into NaN with exit 0; such a file is refused at load, naming it, every bad tensor
// and how many of its values are bad.
void check_weights(const std::string& path, const NamedTensors& tensors) {
  std::string problems;
  for (const auto& [name, t] : tensors) {
    const std::vector<float> v = t.to_vector();
    const bool is_var = name.ends_with("running_var"), is_std = name == "input_norm.std";
    int64_t non_finite = 0, out_of_range = 0;
    for (float x : v) {
      if (!std::isfinite(x)) ++non_finite;
      else if ((is_var && x < 0.f) || (is_std && !(x > 0.f))) ++out_of_range;
    }
    if (non_finite) problems += str("; ", name, ": ", non_finite, " of ", v.size(), " values are NaN or infinite");
    if (out_of_range)
      problems += str("; ", name, ": ", out_of_range, " of ", v.size(), is_var ? " values are negative" : " values are not > 0");
  }
  NIMBUS_CHECK(problems.empty(), path, ": refusing these weights", problems);
}
void check_weights(const std::string& path, const Module& m) { check_weights(path, m.state_dict()); }
}  // namespace

LoadedModel load_model(const std::string& path) {
  SafetensorsFile file = load_safetensors(path);
  LoadedModel out;
  const bool ours = file.metadata.count("nimbus.checksum") > 0;
  if (ours) verify_checkpoint(file, path);  // the whole file, before its metadata builds anything
  auto cfg = file.metadata.find(kModelKey);
  const ModelConfig config =
      cfg != file.metadata.end() ? ModelConfig::from_json(cfg->second, path) : infer_config(file, path);
  out.from_pytorch = !ours;
  int64_t held = 0;
  for (const auto& [name, t] : file.tensors) held += t.numel();
  const int64_t needs = min_parameter_count(config);
  NIMBUS_CHECK(held >= needs, path, ": describes ", config.str(), ", which has at least ", needs,
               " parameters, but the file holds only ", held, " values (corrupt, or not this model)");
  try {
    out.model = build_model(config);
  } catch (const Error& e) {
    throw Error(str(path, ": ", e.what()));
  }
  Module& m = out.model.module();
  if (ours) {
    out.metadata = load_checkpoint(file, path, m);  // strict names and shapes, all problems listed
  } else {
    // PyTorch's tensors: strict, except that a classifier may lack input_norm (identity then).
    NamedTensors src;
    std::set<std::string> names;
    for (auto& [n, t] : file.tensors) {
      src.emplace_back(n, t);
      names.insert(n);
    }
    if (out.model.classifier) {
      for (const char* n : kInputNorm) {
        if (names.count(n)) continue;
        out.has_input_norm = false;
        for (auto& [mn, mt] : m.state_dict())
          if (mn == n) src.emplace_back(n, mt.clone());
      }
    }
    try {
      m.load_state_dict(src, /*strict=*/true);
    } catch (const Error& e) {
      throw Error(str(path, ": does not fit ", config.str(), ": ", e.what()));
    }
    for (const auto& [k, v] : file.metadata)
      if (!starts_with(k, "nimbus.") && !starts_with(k, "optim.")) out.metadata[k] = v;
  }
  check_weights(path, m);
  out.epoch = parse_epoch(out.metadata, path);
  m.eval();
  return out;
}

int64_t load_training_state(const std::string& path, Model& model, Optimizer& optimizer, Rng* rng) {
  SafetensorsFile file = load_safetensors(path);
  auto cfg = file.metadata.find(kModelKey);
  NIMBUS_CHECK(cfg != file.metadata.end(), path, ": not a nimbus model checkpoint (no \"model\" metadata)");
  ModelConfig saved = ModelConfig::from_json(cfg->second, path);
  NIMBUS_CHECK(saved.to_json() == model.config.to_json(), path, ": holds ", saved.str(), " but the model is ",
               model.config.str());
  Metadata meta = load_checkpoint(path, model.module(), &optimizer);
  check_weights(path, model.module());
  if (rng) {
    auto it = meta.find(kRngKey);
    if (it != meta.end()) {
      try {
        rng_state_from_string(*rng, it->second);
      } catch (const Error& e) {
        throw Error(str(path, ": ", e.what()));
      }
    }
  }
  return parse_epoch(meta, path);
}

InitReport init_from(const std::string& path, Model& model) {
  uint64_t content = 0;
  SafetensorsFile file = load_safetensors(path, &content);
  if (file.metadata.count("nimbus.checksum")) verify_checkpoint(file, path);
  std::map<std::string, const Tensor*> held;
  for (const auto& [n, t] : file.tensors)
    if (!starts_with(n, "optim.")) held[n] = &t;
  const auto what_file_is = [&] {  // for the errors: the file's own model, when it can tell
    const auto cfg = file.metadata.find(kModelKey);
    try {
      return (cfg != file.metadata.end() ? ModelConfig::from_json(cfg->second, path) : infer_config(file, path)).str();
    } catch (const Error&) {
      return std::string("a model it does not describe");
    }
  };
  Module& m = model.module();
  const bool classifier = model.classifier != nullptr;
  InitReport report;
  report.content_fnv1a = content;
  NamedTensors take;
  std::vector<std::string> missing, shaped;
  std::set<std::string> mine;
  for (const auto& [name, t] : m.state_dict()) {
    mine.insert(name);
    const auto it = held.find(name);
    const bool head = classifier && starts_with(name, "fc."), norm = classifier && starts_with(name, "input_norm.");
    if (it != held.end() && it->second->shape() == t.shape()) {
      take.emplace_back(name, *it->second);
      continue;
    }
    if (head) {  // a head for other classes, or none (a backbone): fc starts anew
      report.kept.push_back(it == held.end() ? str(name, " (not in the file)")
                                             : str(name, " (", it->second->shape().str(), " in the file, ",
                                                   t.shape().str(), " here: another number of classes)"));
    } else if (norm && it == held.end()) {  // a PyTorch file: the trainer measures it on its data
      report.kept.push_back(str(name, " (not in the file)"));
    } else if (it == held.end()) {
      missing.push_back(name);
    } else {
      shaped.push_back(str(name, " ", it->second->shape().str(), " in the file, ", t.shape().str(), " here"));
    }
  }
  std::vector<std::string> unexpected;
  for (const auto& [name, t] : held)
    if (!mine.count(name)) unexpected.push_back(name);
  if (classifier && held.count(kInputNorm[0]) != held.count(kInputNorm[1]))  // half a scaling fits no data
    missing.push_back(held.count(kInputNorm[0]) ? kInputNorm[1] : kInputNorm[0]);
  if (!missing.empty() || !shaped.empty() || !unexpected.empty()) {
    const auto some = [](const std::vector<std::string>& v) {
      std::string s;
      for (size_t i = 0; i < v.size() && i < 8; ++i) s += (i ? ", " : "") + v[i];
      return v.size() > 8 ? str(s, " and ", v.size() - 8, " more") : s;
    };
    std::string problems;
    if (!missing.empty()) problems += str("; ", missing.size(), " missing: ", some(missing));
    if (!shaped.empty()) problems += str("; ", shaped.size(), " shaped otherwise: ", some(shaped));
    if (!unexpected.empty()) problems += str("; ", unexpected.size(), " not in this model: ", some(unexpected));
    throw Error(str(path, ": holds ", what_file_is(), ", which does not fit this run's ", model.config.str(),
                    problems));
  }
  check_weights(path, take);
  m.load_state_dict(take, /*strict=*/false);
  report.copied = int(take.size());
  report.input_norm = classifier && held.count(kInputNorm[0]) && held.count(kInputNorm[1]);
  for (const auto& [k, v] : file.metadata)
    if (!starts_with(k, "nimbus.") && !starts_with(k, "optim.")) report.metadata[k] = v;
  return report;
}

}  // namespace nimbus::models
