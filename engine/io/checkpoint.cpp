// checkpoint.cpp: module + optimiser <-> one checksummed safetensors file.
#include "engine/io/checkpoint.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "engine/io/fnv1a.h"

namespace nimbus {

namespace {
const char* const kOptim = "optim.";
const char* const kChecksumKey = "nimbus.checksum";

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

// Over tensors sorted by name and metadata sorted by key (the checksum itself excluded).
std::string checksum(const NamedTensors& tensors, const Metadata& metadata) {
  std::vector<const std::pair<std::string, Tensor>*> order;
  for (const auto& nt : tensors) order.push_back(&nt);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->first < b->first; });
  Fnv1a f;
  for (const auto* nt : order) {
    f.text(nt->first);
    f.text(nt->second.shape().str());
    std::vector<float> v = nt->second.to_vector();
    f.bytes(v.data(), v.size() * sizeof(float));
  }
  for (const auto& [k, v] : metadata) {
    if (k == kChecksumKey) continue;
    f.text(k);
    f.text(v);
  }
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, f.h);
  return buf;
}
}  // namespace

void save_checkpoint(const std::string& path, const Module& module, const Optimizer* optimizer,
                     const Metadata& metadata) {
  Metadata meta;
  for (const auto& [k, v] : metadata) {
    NIMBUS_CHECK(!starts_with(k, kOptim) && !starts_with(k, "nimbus."), path, ": metadata key '", k,
                 "' uses a reserved prefix (optim. / nimbus.)");
    meta[k] = v;
  }
  NamedTensors tensors = module.state_dict();
  for (const auto& [n, t] : tensors)
    NIMBUS_CHECK(!starts_with(n, kOptim), path, ": module tensor '", n,
                 "' collides with the optimiser prefix 'optim.'");
  if (optimizer) {
    OptimizerState st = optimizer->state_dict();
    for (auto& [n, t] : st.tensors) tensors.emplace_back(kOptim + n, t);
    for (auto& [k, v] : st.info) meta[kOptim + k] = v;
  }
  meta[kChecksumKey] = checksum(tensors, meta);
  save_safetensors(path, tensors, meta);
}

void verify_checkpoint(const SafetensorsFile& file, const std::string& path) {
  auto sum = file.metadata.find(kChecksumKey);
  NIMBUS_CHECK(sum != file.metadata.end(), path, ": not a nimbus checkpoint (no ", kChecksumKey, " in the metadata)");
  NIMBUS_CHECK(sum->second == checksum(file.tensors, file.metadata), path,
               ": checksum mismatch: the checkpoint is corrupt (recorded ", sum->second, ")");
}

Metadata load_checkpoint(const std::string& path, Module& module, Optimizer* optimizer, bool strict) {
  return load_checkpoint(load_safetensors(path), path, module, optimizer, strict);
}

Metadata load_checkpoint(const SafetensorsFile& file, const std::string& path, Module& module, Optimizer* optimizer,
                         bool strict) {
  verify_checkpoint(file, path);

  NamedTensors model;
  OptimizerState ost;
  for (const auto& [n, t] : file.tensors) {
    if (starts_with(n, kOptim))
      ost.tensors.emplace_back(n.substr(std::strlen(kOptim)), t);
    else
      model.emplace_back(n, t);
  }
  Metadata user;
  for (const auto& [k, v] : file.metadata) {
    if (starts_with(k, kOptim))
      ost.info[k.substr(std::strlen(kOptim))] = v;
    else if (!starts_with(k, "nimbus."))
      user[k] = v;
  }

  try {
    if (!optimizer) {
      module.load_state_dict(model, strict);
      return user;
    }
    NIMBUS_CHECK(ost.info.count("type"), "the file holds no optimizer state");
    // The model first (its errors explain most optimiser mismatches); each load is
    // all or nothing, and a failing optimiser load puts the model back as it was.
    NamedTensors before;
    for (auto& [n, t] : module.state_dict()) before.emplace_back(n, t.clone());
    module.load_state_dict(model, strict);
    try {
      optimizer->load_state_dict(ost);
    } catch (...) {
      module.load_state_dict(before, true);
      throw;
    }
  } catch (const Error& e) {
    throw Error(str(path, ": ", e.what()));
  }
  return user;
}

std::string rng_state_to_string(const Rng& rng) {
  auto s = rng.state();
  return str(s[0], ",", s[1], ",", s[2], ",", s[3]);
}

void rng_state_from_string(Rng& rng, const std::string& text) {
  std::array<uint64_t, 4> s{};
  const char* p = text.c_str();
  for (int i = 0; i < 4; ++i) {
    char* end = nullptr;
    errno = 0;
    bool digit = *p >= '0' && *p <= '9';
    s[i] = std::strtoull(p, &end, 10);
    NIMBUS_CHECK(digit && end != p && errno == 0 && *end == (i < 3 ? ',' : '\0'), "rng state: malformed text '", text,
                 "' (expected four comma-separated 64-bit integers)");
    p = end + 1;
  }
  rng.set_state(s);
}

}  // namespace nimbus
