// models_test_util.h: what the model tests share: the real fixture tiles as
// tensors (the same tiles and crops tests/torch/gen_fixtures_models.py used,
// named in the expected files' metadata), a temp directory and the gradient
// check against PyTorch's.
#pragma once
#include <string>
#include <vector>

#include "data/geotiff.h"
#include "data/normalize.h"
#include "engine/io/json.h"
#include "engine/io/safetensors.h"
#include "engine/nn/module.h"
#include "tests/common/check.h"
#include "tests/data/data_test_util.h"

namespace nimbus::test {

// JSON array of strings / numbers from a fixture's metadata.
inline json::Value meta_json(const SafetensorsFile& f, const std::string& key) {
  auto it = f.metadata.find(key);
  REQUIRE_MESSAGE(it != f.metadata.end(), "fixture metadata lacks ", key);
  return json::parse(it->second);
}

// EuroSAT tiles (paths inside the real-fixture set) -> DN (N, 13, 64, 64).
inline Tensor eurosat_dn(const json::Value& rel_paths) {
  std::vector<float> all;
  int64_t h = 0, w = 0;
  for (const auto& p : rel_paths.arr) {
    data::Raster r = data::read_geotiff(real_fixture(p.s));
    REQUIRE(r.bands == 13);
    h = r.height, w = r.width;
    all.insert(all.end(), r.data.begin(), r.data.end());
  }
  return Tensor::from_vector({int64_t(rel_paths.arr.size()), 13, h, w}, all);
}

// SEN12MS-CR triplet crops as the network sees them (data/normalize.h):
// cloudy S2 (N,13,s,s), S1 (N,2,s,s), cloud-free S2 target (N,13,s,s).
struct Triplets {
  Tensor s2, s1, target;
};

inline Triplets sen12mscr_crops(const json::Value& names, const json::Value& crop) {
  const int x0 = int(crop.arr[0].num), y0 = int(crop.arr[1].num), s = int(crop.arr[2].num);
  const std::string base = real_fixture("sen12ms_cr/xufangchn+GLF-CR/data/");
  std::vector<float> s2, s1, tgt;
  auto read = [&](const std::string& path, std::vector<float>& into, bool sar) {
    data::Raster r = data::read_geotiff(path, data::Window{x0, y0, s, s});
    if (sar) data::normalize_s1(r.data.data(), size_t(s) * size_t(s));
    else data::normalize_s2(r.data.data(), r.data.size());
    into.insert(into.end(), r.data.begin(), r.data.end());
  };
  for (const auto& n : names.arr) {
    read(base + "s2_cloudy/" + n.s + ".tif", s2, false);
    read(base + "s1/" + n.s + ".tif", s1, true);
    read(base + "s2_cloudfree/" + n.s + ".tif", tgt, false);
  }
  const int64_t N = int64_t(names.arr.size());
  return {Tensor::from_vector({N, 13, s, s}, s2), Tensor::from_vector({N, 2, s, s}, s1),
          Tensor::from_vector({N, 13, s, s}, tgt)};
}

// CHECKs that every parameter got a gradient, within (atol, rtol) of PyTorch's "grad.<name>" in
// the expected file; returns how many parameters there are.
inline int check_grads(const NamedTensors& params, const SafetensorsFile& want, double atol, double rtol) {
  int n = 0;
  for (const auto& [name, p] : params) {
    REQUIRE_MESSAGE(p.grad().defined(), name);
    check_close(p.grad(), want.at("grad." + name), atol, rtol, "grad." + name);
    ++n;
  }
  return n;
}

}  // namespace nimbus::test
