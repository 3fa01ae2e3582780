// test_model_io.cpp: self-describing model checkpoints: config JSON, save/load
// round trips (weights, buffers, optimiser, epoch, RNG), loading files that hold
// only PyTorch's tensors, names saved for torchvision, and the errors for corrupt
// or mismatched files (naming the file, listing every problem).
#include <cstdio>
#include <fstream>
#include <iterator>

#include "tests/common/check.h"
#include "engine/io/checkpoint.h"
#include "engine/io/fnv1a.h"
#include "engine/ops/loss.h"
#include "engine/optim/adam.h"
#include "models/model_io.h"
#include "tests/models/models_test_util.h"

using namespace nimbus;
using namespace nimbus::models;
using namespace nimbus::test;

namespace {
const ResNetConfig kTiny{BlockType::Bottleneck, {1, 2, 1, 1}, 4, 13, 10};

void check_same_state(const Module& a, const Module& b) {
  auto sa = a.state_dict(), sb = b.state_dict();
  REQUIRE(sa.size() == sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    CHECK(sa[i].first == sb[i].first);
    check_close(sa[i].second, sb[i].second, 0, 0, sa[i].first);
  }
}

void write_bytes(const std::string& path, const std::string& b) { std::ofstream(path, std::ios::binary) << b; }

// One optimiser step of a DSen2-CR towards zero output (L1): weights and optimiser state that a
// checkpoint then holds.
void l1_step(Model& m, Optimizer& opt, const Tensor& s2, const Tensor& s1) {
  opt.zero_grad();
  l1_loss(m.dsen2cr->forward(s2, s1), Tensor::zeros(s2.shape())).backward();
  opt.step();
}
}  // namespace

TEST_CASE("model config: JSON round trip and errors naming the field") {
  for (const ModelConfig& c : {ModelConfig::of(resnet50_config()), ModelConfig::of(kTiny),
                               ModelConfig::of(DSen2CRConfig{16, 256, true}),
                               ModelConfig::of(DSen2CRConfig{2, 8, false})}) {
    ModelConfig back = ModelConfig::from_json(c.to_json());
    CHECK(back.to_json() == c.to_json());
    CHECK(back.str() == c.str());
  }
  CHECK(ModelConfig::of(resnet50_config()).to_json() ==
        R"({"arch":"resnet","block":"bottleneck","blocks":[3,4,6,3],"width":64,"in_channels":13,"classes":10})");
  CHECK_THROWS_WITH_AS(ModelConfig::from_json(R"({"arch":"vgg"})", "f.st"),
                       doctest::Contains("f.st: unknown model arch \"vgg\""), Error);
  CHECK_THROWS_WITH_AS(ModelConfig::from_json(R"({"arch":"dsen2cr","blocks":2,"features":8})", "f.st"),
                       doctest::Contains("needs \"sar\""), Error);
  CHECK_THROWS_WITH_AS(ModelConfig::from_json(R"({"arch":"resnet","block":"basic","blocks":[1,1,1],"width":4,)"
                                              R"("in_channels":13,"classes":10})"),
                       doctest::Contains("four integers"), Error);
  CHECK_THROWS_WITH_AS(ModelConfig::from_json("{oops", "f.st"),
                       doctest::Contains("f.st: model config is not valid JSON"), Error);
  // Sizes from the file are bounded before anything is built (blocks = 1e8 once built for minutes).
  CHECK_THROWS_WITH_AS(ModelConfig::from_json(R"({"arch":"resnet","block":"basic","blocks":[1,100000000,1,1],)"
                                              R"("width":4,"in_channels":13,"classes":10})", "f.st"),
                       doctest::Contains("f.st: model config field \"blocks\" is 100000000, outside [0, 64]"), Error);
  CHECK_THROWS_WITH_AS(ModelConfig::from_json(R"({"arch":"resnet","block":"basic","blocks":[1,1,1,1],)"
                                              R"("width":100000000,"in_channels":13,"classes":10})", "f.st"),
                       doctest::Contains("\"width\" is 100000000, outside [1, 512]"), Error);
  CHECK_THROWS_WITH_AS(ModelConfig::from_json(R"({"arch":"dsen2cr","blocks":2,"features":0,"sar":true})", "f.st"),
                       doctest::Contains("\"features\" is 0, outside [1, 1024]"), Error);
  CHECK_NOTHROW(ModelConfig::from_json(R"({"arch":"dsen2cr","blocks":128,"features":1024,"sar":true})", "f.st"));
}

TEST_CASE("load_model: a file holding fewer values than its model's weights is refused before the build") {
  // The bound is a true lower bound, and a tight one, for the models we train.
  for (const ModelConfig& c : {ModelConfig::of(resnet50_config()), ModelConfig::of(resnet18_config()),
                               ModelConfig::of(kTiny), ModelConfig::of(DSen2CRConfig{16, 256, true}),
                               ModelConfig::of(DSen2CRConfig{2, 8, false})}) {
    CAPTURE(c.str());
    Rng rng(1);
    const Model m = build_model(c, rng);
    const int64_t actual = m.module().num_parameters(), bound = min_parameter_count(c);
    CHECK(bound <= actual);
    if (actual > 1000000) CHECK(double(bound) >= 0.99 * double(actual));  // the tiny ones are mostly batch norm
  }
  TempDir dir;
  Rng rng(2);
  const Model tiny = build_model(ModelConfig::of(kTiny), rng);
  const std::string good = dir / "tiny.safetensors";
  save_model(good, tiny, SaveOptions{});
  CHECK_NOTHROW(load_model(good));
  // The same tensors under a configuration of width 512 and 64 blocks a stage: ~10^10 parameters
  // claimed by a file of a few thousand values.
  SafetensorsFile f = load_safetensors(good);
  ResNetConfig big = kTiny;
  big.width = 512;
  big.blocks = {64, 64, 64, 64};
  f.metadata["model"] = ModelConfig::of(big).to_json();
  std::vector<std::pair<std::string, Tensor>> tensors(f.tensors.begin(), f.tensors.end());
  // A nimbus checkpoint so edited fails its checksum before anything is built from the metadata;
  // without the checksum (a file from elsewhere), the parameter count refuses it, also unbuilt.
  const std::string edited = dir / "edited.safetensors";
  save_safetensors(edited, tensors, f.metadata);
  CHECK_THROWS_WITH_AS(load_model(edited), doctest::Contains("edited.safetensors: checksum mismatch"), Error);
  f.metadata.erase("nimbus.checksum");
  const std::string bad = dir / "claims_more.safetensors";
  save_safetensors(bad, tensors, f.metadata);
  CHECK_THROWS_WITH_AS(load_model(bad), doctest::Contains("claims_more.safetensors: describes resnet("), Error);
  CHECK_THROWS_WITH_AS(load_model(bad), doctest::Contains("but the file holds only"), Error);
}

TEST_CASE("save_model / load_model: the file rebuilds the same model (classifier and DSen2-CR)") {
  TempDir dir;
  Rng rng(5);
  Model m = build_model(ModelConfig::of(kTiny), rng);
  std::vector<float> mean(13), std(13);
  for (int c = 0; c < 13; ++c) mean[c] = 0.01f * float(c), std[c] = 0.1f + 0.01f * float(c);
  m.classifier->set_input_norm(mean, std);
  Tensor dn = Tensor::uniform({2, 13, 32, 32}, rng, 0.f, 6000.f);
  m.classifier->train();
  m.classifier->logits(dn);  // moves the BN running stats off their defaults
  m.classifier->eval();
  save_model(dir / "c.safetensors", m, SaveOptions{nullptr, 7, nullptr, {{"note", "hello"}}});
  LoadedModel lm = load_model(dir / "c.safetensors");
  CHECK_FALSE(lm.from_pytorch);
  CHECK(lm.epoch == 7);
  CHECK(lm.metadata.at("note") == "hello");
  CHECK(lm.model.config.to_json() == m.config.to_json());
  REQUIRE(lm.model.classifier);
  check_same_state(*lm.model.classifier, *m.classifier);
  check_close(lm.model.classifier->probabilities(dn), m.classifier->probabilities(dn), 0, 0, "probabilities");

  Model d = build_model(ModelConfig::of(DSen2CRConfig{2, 8, false}), rng);
  save_model(dir / "d.safetensors", d);
  LoadedModel ld = load_model(dir / "d.safetensors");
  REQUIRE(ld.model.dsen2cr);
  CHECK(ld.model.config.dsen2cr == DSen2CRConfig{2, 8, false});
  CHECK(ld.epoch == -1);
  check_same_state(*ld.model.dsen2cr, *d.dsen2cr);
  CHECK_THROWS_WITH_AS(save_model(dir / "x.safetensors", d, SaveOptions{nullptr, -1, nullptr, {{"model", "x"}}}),
                       doctest::Contains("\"model\" is reserved"), Error);
}

TEST_CASE("load_training_state: weights, Adam state, epoch and RNG resume exactly") {
  TempDir dir;
  Rng rng(9);
  Model m = build_model(ModelConfig::of(DSen2CRConfig{1, 4, true}), rng);
  Adam adam(m.module().named_parameters(), AdamOptions{});
  Tensor s2 = Tensor::uniform({1, 13, 8, 8}, rng, 0, 1), s1 = Tensor::uniform({1, 2, 8, 8}, rng, 0, 1);
  auto step = [&](Model& mm, Adam& opt) { l1_step(mm, opt, s2, s1); };
  step(m, adam);
  Rng data_rng(77);
  data_rng.next_u64();
  save_model(dir / "t.safetensors", m, SaveOptions{&adam, 3, &data_rng, {}});

  Model r = build_model(ModelConfig::of(DSen2CRConfig{1, 4, true}));
  Adam radam(r.module().named_parameters(), AdamOptions{});
  Rng rrng(1);
  CHECK(load_training_state(dir / "t.safetensors", r, radam, &rrng) == 3);
  CHECK(rrng.next_u64() == data_rng.next_u64());
  step(m, adam);
  step(r, radam);  // the same second step from the restored state
  check_same_state(r.module(), m.module());

  Model other = build_model(ModelConfig::of(DSen2CRConfig{1, 8, true}));
  Adam oadam(other.module().named_parameters(), AdamOptions{});
  CHECK_THROWS_WITH_AS(load_training_state(dir / "t.safetensors", other, oadam),
                       doctest::Contains("holds dsen2cr(B=1, F=4, SAR) but the model is dsen2cr(B=1, F=8, SAR)"),
                       Error);
}

TEST_CASE("resnet50 checkpoint: saved names and shapes are torchvision's (what torch loads strictly)") {
  TempDir dir;
  Model m = build_model(ModelConfig::of(resnet50_config()));
  save_model(dir / "r50.safetensors", m);
  SafetensorsFile f = load_safetensors(dir / "r50.safetensors");
  std::ifstream in(fixture("models_resnet50_names.txt"));
  std::string line;
  size_t i = 0, n = 0;
  for (; std::getline(in, line); ++n) {
    const std::string name = line.substr(0, line.find(' '));
    const Tensor* t = f.find(name);
    REQUIRE_MESSAGE(t, name);
    std::string d;
    for (int k = 0; k < t->ndim(); ++k) d += (k ? "," : "") + std::to_string(t->size(k));
    CHECK_MESSAGE(d == line.substr(line.find(' ') + 1), name);
    CHECK_MESSAGE(f.tensors[i++].first == name, "order at ", name);
  }
  CHECK(n == 320);
  // What else is in the file: exactly the classifier's input statistics (torch drops these).
  REQUIRE(f.tensors.size() == n + 2);
  CHECK(f.tensors[n].first == "input_norm.mean");
  CHECK(f.tensors[n + 1].first == "input_norm.std");
  CHECK(f.metadata.at("model") == ModelConfig::of(resnet50_config()).to_json());
}

TEST_CASE("load_model: PyTorch-only files (config inferred - input_norm optional)") {
  TempDir dir;
  SafetensorsFile torch_file = load_safetensors(fixture("models_resnet_basic.safetensors"));
  NamedTensors no_norm;
  for (auto& [n, t] : torch_file.tensors)
    if (!n.starts_with("input_norm.")) no_norm.emplace_back(n, t);
  save_safetensors(dir / "bare.safetensors", no_norm);
  LoadedModel lm = load_model(dir / "bare.safetensors");
  CHECK(lm.from_pytorch);
  CHECK_FALSE(lm.has_input_norm);
  CHECK(lm.model.config.resnet == ResNetConfig{BlockType::Basic, {2, 1, 1, 2}, 8, 13, 10});
  CHECK(lm.model.classifier->input_norm().mean.to_vector() == std::vector<float>(13, 0.f));
  CHECK(lm.model.classifier->input_norm().std.to_vector() == std::vector<float>(13, 1.f));

  CHECK(infer_config(load_safetensors(fixture("models_resnet_bottleneck.safetensors")), "x").str() ==
        "resnet(bottleneck [1,1,1,1] width 8, 13 -> 10)");
  CHECK(infer_config(load_safetensors(fixture("models_dsen2cr_nosar.safetensors")), "x").str() ==
        "dsen2cr(B=1, F=8, no SAR)");
  save_safetensors(dir / "other.safetensors", {{"encoder.weight", Tensor::zeros({2, 2})}});
  CHECK_THROWS_WITH_AS(load_model(dir / "other.safetensors"),
                       doctest::Contains("other.safetensors: cannot tell the architecture"), Error);
}

TEST_CASE("load_model: mismatched tensors are listed all at once, naming the file") {
  TempDir dir;
  SafetensorsFile f = load_safetensors(fixture("models_dsen2cr_sar.safetensors"));
  NamedTensors bad;
  for (auto& [n, t] : f.tensors) {
    if (n == "blocks.0.conv2.bias") continue;                                          // missing
    if (n == "tail.bias") bad.emplace_back(n, Tensor::zeros({12}));                    // wrong shape
    else bad.emplace_back(n == "blocks.1.conv1.weight" ? "blocks.1.convX.weight" : n, t);  // renamed
  }
  save_safetensors(dir / "bad.safetensors", bad);
  try {
    load_model(dir / "bad.safetensors");
    FAIL("no error");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("bad.safetensors") != std::string::npos);
    CHECK(msg.find("dsen2cr(B=2, F=16, SAR)") != std::string::npos);
    CHECK(msg.find("blocks.0.conv2.bias") != std::string::npos);
    CHECK(msg.find("blocks.1.conv1.weight") != std::string::npos);
    CHECK(msg.find("blocks.1.convX.weight") != std::string::npos);
    CHECK(msg.find("tail.bias: checkpoint (12) vs model (13)") != std::string::npos);
  }
}

TEST_CASE("load_model: corrupt and truncated checkpoints are errors naming the file") {
  TempDir dir;
  Model m = build_model(ModelConfig::of(DSen2CRConfig{1, 4, false}));
  save_model(dir / "ok.safetensors", m);
  std::string bytes = read_file(dir / "ok.safetensors");
  std::string flipped = bytes;
  flipped[flipped.size() - 5] ^= 0x40;  // a weight's byte
  write_bytes(dir / "flip.safetensors", flipped);
  CHECK_THROWS_WITH_AS(load_model(dir / "flip.safetensors"), doctest::Contains("flip.safetensors: checksum mismatch"),
                       Error);
  write_bytes(dir / "cut.safetensors", bytes.substr(0, bytes.size() / 2));
  CHECK_THROWS_WITH_AS(load_model(dir / "cut.safetensors"), doctest::Contains("cut.safetensors"), Error);
  CHECK_THROWS_WITH_AS(load_model(dir / "absent.safetensors"), doctest::Contains("absent.safetensors"), Error);
}

TEST_CASE("load_model: weights with NaN, infinity, a negative running variance or a zero input std are refused") {
  // Such weights made classify write NaN probabilities with exit 0; now the file is refused at load,
  // naming it and every bad tensor. PyTorch-named files (no checksum) are where they can come from.
  TempDir dir;
  SafetensorsFile f = load_safetensors(fixture("models_resnet_basic.safetensors"));
  auto with = [&](const std::string& name, size_t at, float value) {
    NamedTensors out;
    for (auto& [n, t] : f.tensors) {
      Tensor c = t.clone();
      if (n == name) {
        std::vector<float> v = c.to_vector();
        v.at(at) = value;
        c = Tensor::from_vector(c.shape(), v);
      }
      out.emplace_back(n, c);
    }
    const std::string p = dir / "w.safetensors";
    save_safetensors(p, out);
    return p;
  };
  CHECK_NOTHROW(load_model(with("fc.bias", 0, 0.5f)));
  CHECK_THROWS_WITH_AS(load_model(with("fc.weight", 3, NAN)),
                       doctest::Contains("w.safetensors: refusing these weights; fc.weight: 1 of"), Error);
  CHECK_THROWS_WITH_AS(load_model(with("conv1.weight", 0, INFINITY)), doctest::Contains("NaN or infinite"), Error);
  CHECK_THROWS_WITH_AS(load_model(with("bn1.running_var", 1, -0.5f)),
                       doctest::Contains("bn1.running_var: 1 of 8 values are negative"), Error);
  CHECK_THROWS_WITH_AS(load_model(with("input_norm.std", 2, 0.f)),
                       doctest::Contains("input_norm.std: 1 of 13 values are not > 0"), Error);
}

// init_from (the trainers' --init) at the model level: a training checkpoint's weights without its
// optimiser state, a bfloat16 file converted, and a bad file refused with the model left as it was.
TEST_CASE("init_from: copies a checkpoint's weights (not its optimiser state), converts dtypes, refuses NaN unchanged") {
  TempDir dir;
  Rng rng(21);
  Model src = build_model(ModelConfig::of(DSen2CRConfig{1, 4, true}), rng);
  Adam adam(src.module().named_parameters(), AdamOptions{});
  Tensor s2 = Tensor::uniform({1, 13, 8, 8}, rng, 0, 1), s1 = Tensor::uniform({1, 2, 8, 8}, rng, 0, 1);
  l1_step(src, adam, s2, s1);
  save_model(dir / "ckpt.safetensors", src, SaveOptions{&adam, 1, nullptr, {{"note", "kept"}}});
  Model dst = build_model(ModelConfig::of(DSen2CRConfig{1, 4, true}), rng);
  const InitReport r = init_from(dir / "ckpt.safetensors", dst);
  CHECK(r.copied == 8);
  CHECK(r.kept.empty());
  CHECK_FALSE(r.input_norm);
  CHECK(r.metadata.at("note") == "kept");
  CHECK(r.metadata.count("optim.type") == 0);
  check_same_state(dst.module(), src.module());
  {  // the hash a run records of its --init file: FNV-1a over the file's bytes, from the same read
    std::ifstream in(dir / "ckpt.safetensors", std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    Fnv1a h;
    h.bytes(bytes.data(), bytes.size());
    CHECK(bytes.size() > 1000);
    CHECK(r.content_fnv1a == h.h);
  }
  // The same weights in bfloat16 (as PyTorch saves a half-precision model): converted, each within
  // bfloat16's rounding (2^-8 relative) of the float32 value.
  NamedTensors bf;
  for (auto& [n, t] : src.module().state_dict()) bf.emplace_back(n, t.to(DType::BF16));
  save_safetensors(dir / "bf16.safetensors", bf);
  Model half = build_model(ModelConfig::of(DSen2CRConfig{1, 4, true}), rng);
  CHECK(init_from(dir / "bf16.safetensors", half).copied == 8);
  auto sh = half.module().state_dict(), ss = src.module().state_dict();
  for (size_t i = 0; i < sh.size(); ++i) {
    CHECK(sh[i].second.dtype() == DType::F32);
    check_close(sh[i].second.to_vector(), ss[i].second.to_vector(), 1e-30, 1.0 / 256, sh[i].first);
  }
  // A NaN: refused, naming the file and the tensor, and the model keeps its own weights.
  NamedTensors bad;
  for (auto& [n, t] : src.module().state_dict()) {
    std::vector<float> v = t.to_vector();
    if (n == "blocks.0.conv2.weight") v[5] = NAN;
    bad.emplace_back(n, Tensor::from_vector(t.shape(), v));
  }
  save_safetensors(dir / "nan.safetensors", bad);
  Model fresh = build_model(ModelConfig::of(DSen2CRConfig{1, 4, true}), rng);
  NamedTensors before;
  for (auto& [n, t] : fresh.module().state_dict()) before.emplace_back(n, t.clone());
  CHECK_THROWS_WITH_AS(init_from(dir / "nan.safetensors", fresh),
                       doctest::Contains("nan.safetensors: refusing these weights; blocks.0.conv2.weight: 1 of"), Error);
  auto after = fresh.module().state_dict();
  for (size_t i = 0; i < after.size(); ++i) check_close(after[i].second, before[i].second, 0, 0, after[i].first);
  // A damaged nimbus checkpoint: its checksum says so before anything is read from it.
  std::ifstream in(dir / "ckpt.safetensors", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  bytes[bytes.size() - 3] ^= 0x10;
  write_bytes(dir / "flipped.safetensors", bytes);
  CHECK_THROWS_WITH_AS(init_from(dir / "flipped.safetensors", fresh),
                       doctest::Contains("flipped.safetensors: checksum mismatch"), Error);
  // A classifier file with half an input scaling (a mean, no std): refused, not half taken.
  Model clf = build_model(ModelConfig::of(kTiny), rng);
  NamedTensors half_norm;
  for (auto& [n, t] : clf.module().state_dict())
    if (n != "input_norm.std") half_norm.emplace_back(n, t);
  save_safetensors(dir / "half_norm.safetensors", half_norm);
  Model target = build_model(ModelConfig::of(kTiny), rng);
  CHECK_THROWS_WITH_AS(init_from(dir / "half_norm.safetensors", target), doctest::Contains("1 missing: input_norm.std"),
                       Error);
}
