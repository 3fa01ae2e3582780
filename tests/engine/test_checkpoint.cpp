// test_checkpoint.cpp: checkpoint round trip (weights, buffers, optimiser state,
// metadata, rng), resumed training equals uninterrupted training, corrupt or
// truncated files give an Error, and writes leave no temporary files.
#include <doctest/doctest.h>

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "backends/cuda/backend.h"
#include "engine/io/checkpoint.h"
#include "engine/io/output_path.h"
#include "engine/nn/layers.h"
#include "engine/ops/loss.h"
#include "engine/optim/adam.h"
#include "engine/optim/nadam.h"
#include "engine/optim/sgd.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/nimbus_ckpt_XXXXXX";
    REQUIRE(::mkdtemp(tmpl));
    path = tmpl;
  }
  ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    if (DIR* d = ::opendir(path.c_str())) {
      while (dirent* e = ::readdir(d))
        if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") out.push_back(e->d_name);
      ::closedir(d);
    }
    return out;
  }
};

void write_all(const std::string& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

// conv-bn-relu-gap-linear: parameters and buffers of every kind.
std::shared_ptr<Sequential> small_model(uint64_t seed) {
  Rng rng(seed);
  return make_sequential(std::make_shared<Conv2d>(2, 3, 3, 1, 1, true, rng), std::make_shared<BatchNorm2d>(3),
                         std::make_shared<ReLU>(), std::make_shared<GlobalAvgPool>(),
                         std::make_shared<Linear>(3, 2, true, rng));
}

struct Batch {
  Tensor x, y;
};
Batch batch(Rng& rng) {
  return {Tensor::randn({4, 2, 5, 5}, rng), Tensor::from_vector({4}, {float(rng.below(2)), float(rng.below(2)), 0, 1})};
}

void train_step(Sequential& m, Optimizer& opt, Rng& data_rng) {
  Batch b = batch(data_rng);
  opt.zero_grad();
  cross_entropy(m.forward(b.x), b.y).backward();
  opt.step();
}

// The same step on device d (the batch made on the host, then moved).
void train_step_on(Sequential& m, Optimizer& opt, Rng& data_rng, Device d) {
  Batch b = batch(data_rng);
  opt.zero_grad();
  cross_entropy(m.forward(b.x.to(d)), b.y.to(d)).backward();
  opt.step();
}
void check_same_state(const Module& a, const Module& b) {
  auto sa = a.state_dict(), sb = b.state_dict();
  REQUIRE(sa.size() == sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    CHECK(sa[i].first == sb[i].first);
    CHECK_MESSAGE(sa[i].second.to_vector() == sb[i].second.to_vector(), sa[i].first);
  }
}

}  // namespace

// A device or pipe is written directly: renaming a temporary over /dev/full replaced the device with
// a regular file (found by a test that meant to fill a disk).
TEST_CASE("write_file_atomic: devices are written in place and a full one is an error naming it") {
  struct stat before {};
  if (::stat("/dev/null", &before) != 0 || ::access("/dev/full", W_OK) != 0) return;  // no such devices here
  CHECK_NOTHROW(write_file_atomic("/dev/null", "bytes"));
  CHECK_THROWS_WITH_AS(write_file_atomic("/dev/full", "bytes"), doctest::Contains("/dev/full: write failed"), Error);
  struct stat after {};
  REQUIRE(::stat("/dev/full", &after) == 0);
  CHECK(S_ISCHR(after.st_mode));  // still the device
  REQUIRE(::stat("/dev/null", &after) == 0);
  CHECK(S_ISCHR(after.st_mode));
  CHECK_THROWS_WITH_AS(write_file_atomic("/tmp", "x"), doctest::Contains("/tmp: is a folder"), Error);
}

// An atomic writer renames a temporary over the output: atomic_output_path says where. A link is
// followed (its file replaced, the link kept: renaming over it lost the link); a pipe, a device or a
// folder is refused (renaming over one replaced it with a plain file).
TEST_CASE("atomic_output_path: links are followed and kept, pipes, devices and folders are refused") {
  TempDir dir;
  auto at = [&](const char* name) { return dir.path + "/" + name; };
  const std::string file = at("file.bin"), link = at("link.bin"), chain = at("chain.bin");
  const std::string dangling = at("dangling.bin"), fifo = at("fifo");
  write_file_atomic(file, "old");
  fs::create_symlink("file.bin", link);  // relative: resolved next to the link
  fs::create_symlink(link, chain);
  fs::create_symlink("later.bin", dangling);
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK(atomic_output_path(file) == file);
  CHECK(atomic_output_path(at("new.bin")) == at("new.bin"));
  CHECK(atomic_output_path(link) == at("file.bin"));
  CHECK(atomic_output_path(chain) == at("file.bin"));
  CHECK(atomic_output_path(dangling) == at("later.bin"));
  CHECK_THROWS_WITH_AS(atomic_output_path(fifo), doctest::Contains((fifo + ": is a pipe").c_str()), Error);
  CHECK_THROWS_WITH_AS(atomic_output_path(dir.path), doctest::Contains("is a folder"), Error);
  fs::create_symlink(fifo, at("to_fifo"));
  CHECK_THROWS_WITH_AS(atomic_output_path(at("to_fifo")), doctest::Contains("to_fifo: is a pipe"), Error);
  if (::access("/dev/null", F_OK) == 0)
    CHECK_THROWS_WITH_AS(atomic_output_path("/dev/null"), doctest::Contains("/dev/null: is a device"), Error);
  // write_file_atomic through the chain of links: the file gets the bytes, both links stay links.
  write_file_atomic(chain, "new");
  CHECK(fs::is_symlink(chain));
  CHECK(fs::is_symlink(link));
  std::ifstream in(file);
  std::string got;
  std::getline(in, got);
  CHECK(got == "new");
  write_file_atomic(dangling, "made");  // the file the link names is made
  CHECK(fs::is_symlink(dangling));
  CHECK(fs::is_regular_file(at("later.bin")));
  // The replaced file keeps its permission bits (it used to take the temporary's 0644).
  REQUIRE(::chmod(file.c_str(), 0600) == 0);
  write_file_atomic(link, "again");
  struct stat st {};
  REQUIRE(::stat(file.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  // Another user's link in a sticky world-writable folder (as /tmp) is not followed: as root it could aim
  // a run at /etc. (Needs root to give the link another owner; skipped otherwise.)
  const std::string shared = at("shared");
  fs::create_directories(shared);
  REQUIRE(::chmod(shared.c_str(), 01777) == 0);
  const std::string planted = shared + "/out.bin";
  fs::create_symlink(file, planted);
  if (::lchown(planted.c_str(), 12345, 12345) == 0) {
    CHECK_THROWS_WITH_AS(atomic_output_path(planted), doctest::Contains("is another user's symbolic link"), Error);
    CHECK_THROWS_AS(write_file_atomic(planted, "x"), Error);
    std::ifstream kept(file);
    std::string text;
    std::getline(kept, text);
    CHECK(text == "again");
  } else {
    MESSAGE("not root: the other-user link case is skipped");
  }
}

TEST_CASE("checkpoint: round trip of weights, buffers, optimiser state and metadata, and exact resume") {
  TempDir dir;
  std::string path = dir.path + "/ckpt.safetensors";
  auto model = small_model(1);
  Adam opt(model->named_parameters(), {.lr = 0.01, .weight_decay = 1e-4});
  Rng data_rng(99);
  for (int i = 0; i < 3; ++i) train_step(*model, opt, data_rng);
  opt.set_lr(0.0123456789012345);
  Metadata meta = {
      {"epoch", "3"}, {"config", R"({"lr": 0.01, "model": "small"})"}, {"rng", rng_state_to_string(data_rng)}};
  save_checkpoint(path, *model, &opt, meta);
  CHECK(dir.files() == std::vector<std::string>{"ckpt.safetensors"});  // no temporary left behind

  auto fresh = small_model(2);  // different initial weights
  Adam fresh_opt(fresh->named_parameters(), {.lr = 0.01, .weight_decay = 1e-4});
  Metadata got = load_checkpoint(path, *fresh, &fresh_opt);
  CHECK(got == meta);  // exactly the caller's metadata, reserved keys stripped
  check_same_state(*model, *fresh);
  auto bn = std::dynamic_pointer_cast<BatchNorm2d>(fresh->children()[1].second);
  CHECK(bn->num_batches_tracked.item() == 3);
  CHECK(fresh_opt.lr() == 0.0123456789012345);  // exact, via text
  CHECK(fresh_opt.steps() == 3);
  auto so = opt.state_dict().tensors, sf = fresh_opt.state_dict().tensors;
  REQUIRE(so.size() == sf.size());
  REQUIRE(so.size() == 1 + 6 * 3);  // "step", and per parameter step, exp_avg, exp_avg_sq
  for (size_t i = 0; i < so.size(); ++i) {
    CHECK(so[i].first == sf[i].first);
    CHECK(so[i].second.to_vector() == sf[i].second.to_vector());
  }
  Rng resumed_rng;
  rng_state_from_string(resumed_rng, got.at("rng"));
  CHECK(resumed_rng.state() == data_rng.state());

  // Training on from the checkpoint gives bit-identical weights to never stopping.
  for (int i = 0; i < 3; ++i) {
    train_step(*model, opt, data_rng);
    train_step(*fresh, fresh_opt, resumed_rng);
  }
  check_same_state(*model, *fresh);

  // Weights only: no optimiser passed, optimiser tensors in the file are ignored.
  auto eval_model = small_model(3);
  load_checkpoint(path, *eval_model);
  // Optimiser requested but none saved.
  save_checkpoint(path, *model, nullptr, {});
  Adam another(eval_model->named_parameters(), {});
  CHECK_THROWS_WITH_AS(load_checkpoint(path, *eval_model, &another), doctest::Contains("holds no optimizer state"),
                       Error);
}

// A checkpoint written from the (emulated) CUDA device loads on the CPU with every value equal, and
// back; training on from it on the other device stays within the float32 bound of the first device's
// (the two backends sum in different orders: 1e-5 relative, fp32 math on CUDA), plus 1e-4 absolute:
// the conv bias ahead of batch norm has a gradient of pure rounding noise (batch norm removes its
// effect), which Adam's normalised step turns into moves of up to lr = 0.01 times its relative noise.
TEST_CASE("checkpoint: trained on CUDA, resumed on the CPU and back: the file does not depend on the device") {
  REQUIRE(cuda::register_cuda_backend());
  const cuda::MathScope fp32(cuda::Math::Fp32);
  TempDir dir;
  const AdamOptions o{.lr = 0.01, .weight_decay = 1e-4};
  auto gpu = small_model(1);
  gpu->to(Device::CUDA);
  Adam gopt(gpu->named_parameters(), o);
  Rng data(5);
  for (int i = 0; i < 2; ++i) train_step_on(*gpu, gopt, data, Device::CUDA);
  save_checkpoint(dir.path + "/gpu.safetensors", *gpu, &gopt);
  auto cpu = small_model(2);
  Adam copt(cpu->named_parameters(), o);
  load_checkpoint(dir.path + "/gpu.safetensors", *cpu, &copt);
  check_same_state(*gpu, *cpu);
  CHECK(copt.steps() == 2);
  auto so = gopt.state_dict().tensors, sc = copt.state_dict().tensors;
  REQUIRE(so.size() == sc.size());
  for (size_t i = 0; i < so.size(); ++i) CHECK_MESSAGE(so[i].second.to_vector() == sc[i].second.to_vector(), so[i].first);
  for (const auto& [name, t] : cpu->state_dict()) CHECK_MESSAGE(t.device() == Device::CPU, name);
  // One more step on each device from the same batch.
  Rng r1 = data, r2 = data;
  train_step_on(*gpu, gopt, r1, Device::CUDA);
  train_step_on(*cpu, copt, r2, Device::CPU);
  auto a = gpu->state_dict(), b = cpu->state_dict();
  for (size_t i = 0; i < a.size(); ++i) check_close(a[i].second.to(Device::CPU), b[i].second, 1e-4, 1e-5, a[i].first);
  // And back: the CPU's checkpoint into a CUDA model.
  save_checkpoint(dir.path + "/cpu.safetensors", *cpu, &copt);
  auto gpu2 = small_model(3);
  gpu2->to(Device::CUDA);
  Adam g2(gpu2->named_parameters(), o);
  load_checkpoint(dir.path + "/cpu.safetensors", *gpu2, &g2);
  check_same_state(*cpu, *gpu2);
  for (const auto& [name, t] : gpu2->state_dict()) CHECK_MESSAGE(t.device() == Device::CUDA, name);
  Rng r3 = r2, r4 = r2;
  train_step_on(*gpu2, g2, r3, Device::CUDA);
  train_step_on(*cpu, copt, r4, Device::CPU);
  a = gpu2->state_dict(), b = cpu->state_dict();
  for (size_t i = 0; i < a.size(); ++i) check_close(a[i].second.to(Device::CPU), b[i].second, 1e-4, 1e-5, a[i].first);
}

TEST_CASE("checkpoint: Nadam's m_schedule and SGD's momentum survive a round trip, under the same hyperparameters") {
  TempDir dir;
  std::string path = dir.path + "/n.safetensors";
  auto model = small_model(4);
  Nadam nadam(model->named_parameters(), {.lr = 1e-3});
  Rng data(5);
  for (int i = 0; i < 4; ++i) train_step(*model, nadam, data);
  save_checkpoint(path, *model, &nadam);
  auto m2 = small_model(4);
  Nadam n2(m2->named_parameters(), {.lr = 1e-3});
  load_checkpoint(path, *m2, &n2);
  CHECK(n2.m_schedule() == nadam.m_schedule());
  CHECK(n2.m_schedule() < 0.5f);  // really advanced (S_4 ~ 0.9^4 / 2^4)
  Rng data2 = data;
  for (int i = 0; i < 2; ++i) {
    train_step(*model, nadam, data);
    train_step(*m2, n2, data2);
  }
  check_same_state(*model, *m2);

  // Wrong optimiser type: an Error naming both, and the model, loaded first, is put back as it was
  // (m2 has trained 2 steps past the file: a load that stayed would show).
  SGD sgd(m2->named_parameters(), {.lr = 0.1, .momentum = 0.9});
  std::vector<float> before = m2->state_dict()[0].second.to_vector();
  CHECK(before != load_safetensors(path).at(m2->state_dict()[0].first).to_vector());
  CHECK_THROWS_WITH_AS(load_checkpoint(path, *m2, &sgd), doctest::Contains("saved by nadam, loading into sgd"), Error);
  CHECK(m2->state_dict()[0].second.to_vector() == before);

  // SGD's momentum buffers through a file: the continued run is the uninterrupted one.
  const std::string sgd_path = dir.path + "/s.safetensors";
  auto s1 = small_model(6);
  SGD sgd1(s1->named_parameters(), {.lr = 0.05, .momentum = 0.9});
  Rng sdata(8);
  for (int i = 0; i < 3; ++i) train_step(*s1, sgd1, sdata);
  save_checkpoint(sgd_path, *s1, &sgd1);
  auto s2 = small_model(6);
  SGD sgd2(s2->named_parameters(), {.lr = 0.05, .momentum = 0.9});
  load_checkpoint(sgd_path, *s2, &sgd2);
  Rng sdata2 = sdata;
  for (int i = 0; i < 2; ++i) {
    train_step(*s1, sgd1, sdata);
    train_step(*s2, sgd2, sdata2);
  }
  check_same_state(*s1, *s2);
  // The same type with other hyperparameters: its moments belong to another run; refused, naming them.
  Nadam other_beta(small_model(4)->named_parameters(), {.lr = 1e-3, .beta1 = 0.8});
  CHECK_THROWS_WITH_AS(load_checkpoint(path, *small_model(4), &other_beta),
                       doctest::Contains("beta1 was 0.9 where this nadam has 0.8"), Error);
  SGD other_momentum(small_model(6)->named_parameters(), {.lr = 0.05, .momentum = 0.5});
  CHECK_THROWS_AS(load_checkpoint(sgd_path, *small_model(6), &other_momentum), Error);
}

TEST_CASE("checkpoint: a model mismatch fails with the path and leaves model and optimiser unchanged") {
  TempDir dir;
  std::string path = dir.path + "/m.safetensors";
  auto model = small_model(1);
  Adam opt(model->named_parameters(), {});
  Rng data(1);
  train_step(*model, opt, data);
  save_checkpoint(path, *model, &opt);
  // Same parameter names for the optimiser, different conv width in the model.
  Rng rng(0);
  Sequential other{std::make_shared<Conv2d>(2, 4, 3, 1, 1, true, rng), std::make_shared<BatchNorm2d>(4),
                   std::make_shared<ReLU>(), std::make_shared<GlobalAvgPool>(),
                   std::make_shared<Linear>(4, 2, true, rng)};
  Adam other_opt(other.named_parameters(), {});
  auto w_before = other.state_dict()[0].second.to_vector();
  try {
    load_checkpoint(path, other, &other_opt);
    FAIL("no error");
  } catch (const Error& e) {
    std::string m = e.what();
    CHECK(m.find(path) != std::string::npos);
    CHECK(m.find("wrongly shaped") != std::string::npos);
  }
  CHECK(other.state_dict()[0].second.to_vector() == w_before);
  CHECK(other_opt.steps() == 0);
  CHECK(other_opt.state_dict().tensors.size() == 1);  // the optimiser was never reached

  CHECK_THROWS_WITH_AS(save_checkpoint(path, *model, &opt, {{"optim.lr", "1"}}), doctest::Contains("reserved"), Error);
  CHECK_THROWS_AS(save_checkpoint(dir.path + "/no/such/dir/x.safetensors", *model, &opt), Error);
  CHECK(dir.files() == std::vector<std::string>{"m.safetensors"});
}

TEST_CASE("checkpoint: truncated, bit-flipped and foreign files are clear Errors") {
  TempDir dir;
  std::string good = dir.path + "/good.safetensors", bad = dir.path + "/bad.safetensors";
  auto model = small_model(1);
  Adam opt(model->named_parameters(), {});
  Rng data(1);
  train_step(*model, opt, data);
  save_checkpoint(good, *model, &opt, {{"epoch", "7"}});
  const std::string bytes = read_file(good);
  uint64_t hlen = 0;
  for (int b = 0; b < 8; ++b) hlen |= uint64_t(uint8_t(bytes[b])) << (8 * b);
  REQUIRE(8 + hlen < bytes.size());

  auto fails = [&](const std::string& content) {
    write_all(bad, content);
    auto target = small_model(2);
    Adam target_opt(target->named_parameters(), {});
    try {
      load_checkpoint(bad, *target, &target_opt);
    } catch (const Error& e) {
      return std::string(e.what()).find(bad) != std::string::npos;  // names the file
    }
    return false;
  };
  CHECK_FALSE(fails(bytes));  // the unmodified file loads

  // Truncated anywhere: empty, inside the length, inside the header, inside the data, one byte short.
  for (size_t cut : {size_t(0), size_t(5), size_t(8), size_t(8 + hlen / 2), size_t(8 + hlen), size_t(8 + hlen + 10),
                     bytes.size() / 2 + hlen / 2, bytes.size() - 1}) {
    CAPTURE(cut);
    CHECK(fails(bytes.substr(0, cut)));
  }
  // Every single header byte flipped (two different masks): never a crash, always an Error.
  int undetected = 0;
  for (size_t i = 0; i < 8 + hlen; ++i)
    for (unsigned char mask : {0x01, 0x20}) {
      std::string c = bytes;
      c[i] = char(c[i] ^ mask);
      if (!fails(c)) {
        ++undetected;
        MESSAGE("header flip undetected at byte ", i, " mask ", int(mask), ": '", bytes.substr(i > 20 ? i - 20 : 0, 40),
                "'");
      }
    }
  CHECK(undetected == 0);
  // Data bytes flipped: caught by the checksum.
  for (size_t i : {size_t(8 + hlen), size_t(8 + hlen + 101), bytes.size() - 1}) {
    std::string c = bytes;
    c[i] = char(c[i] ^ 0x04);
    CHECK(fails(c));
  }
  // A valid safetensors file that is not a checkpoint.
  save_safetensors(bad, model->state_dict());
  auto target = small_model(2);
  CHECK_THROWS_WITH_AS(load_checkpoint(bad, *target), doctest::Contains("not a nimbus checkpoint"), Error);
  CHECK_THROWS_WITH_AS(load_checkpoint(dir.path + "/absent.safetensors", *target), doctest::Contains("absent"), Error);
  // Another framework's weights: named, with the way to convert them (a Keras HDF5 file, torch.save's
  // zip and its older pickle), not "corrupt".
  const std::pair<std::string, const char*> others[] = {
      {std::string("\x89HDF\r\n\x1a\n", 8) + std::string(64, '\0'), "not a safetensors file but HDF5 (a Keras "
                                                                   "checkpoint?): scripts/import_keras_dsen2cr.py"},
      {std::string("PK\x03\x04", 4) + std::string(64, '\0'), "not a safetensors file but a zip archive"},
      {std::string("\x80\x02\x8a\x0a", 4) + std::string(64, '\0'), "not a safetensors file but a Python pickle"}};
  for (const auto& [head, says] : others) {
    write_all(bad, head);
    CHECK_THROWS_WITH_AS(load_safetensors(bad), doctest::Contains(says), Error);
  }
}

TEST_CASE("checkpoint: rng state text round trip and malformed text") {
  Rng a(123);
  a.next_u64();
  Rng b;
  rng_state_from_string(b, rng_state_to_string(a));
  CHECK(a.next_u64() == b.next_u64());
  for (const char* bad : {"", "1,2,3", "1,2,3,4,5", "1,2,x,4", "-1,2,3,4", "1,2,3,99999999999999999999999"})
    CHECK_THROWS_WITH_AS(rng_state_from_string(b, bad), doctest::Contains("rng state"), Error);
}

TEST_CASE("safetensors: a shape whose element count wraps is refused before anything is allocated") {
  // [4, 77558837537, 14865121] F32 is 4 (1 + 2^60) elements, 2^64 + 16 bytes: the byte count wrapped
  // to 16 and matched this 16-byte data section, and the tensor was allocated from the shape. [2^32,
  // 2^32] and [2^31, 2^31, 4] wrap the counts to 0 (and overflowed Shape::numel). Each must be an
  // Error naming the file, before any allocation sized from the shape.
  TempDir dir;
  const std::string p = dir.path + "/wrap.safetensors";
  for (const char* shape : {"[4,77558837537,14865121]", "[4294967296,4294967296]", "[2147483648,2147483648,4]"}) {
    CAPTURE(shape);
    std::string header = std::string("{\"t\":{\"dtype\":\"F32\",\"shape\":") + shape + ",\"data_offsets\":[0,16]}}";
    while (header.size() % 8) header += ' ';
    std::string bytes(8, '\0');
    for (int b = 0; b < 8; ++b) bytes[size_t(b)] = char((uint64_t(header.size()) >> (8 * b)) & 0xff);
    write_all(p, bytes + header + std::string(16, '\0'));
    CHECK_THROWS_WITH_AS(load_safetensors(p), doctest::Contains("wrap.safetensors"), Error);
    CHECK_THROWS_WITH_AS(load_safetensors(p), doctest::Contains("needs more bytes"), Error);
  }
  CHECK_THROWS_WITH_AS(Shape({int64_t(1) << 32, int64_t(1) << 32}), doctest::Contains("overflow"), Error);
}

// The format's rules on data_offsets: two byte counts, and the tensors cover the data section exactly,
// no overlap, no hole (https://github.com/huggingface/safetensors: "entirely indexed ... cannot contain
// holes"). Overlapping tensors read the same bytes twice; a hole hides bytes no tensor owns.
TEST_CASE("safetensors: data_offsets that are not byte counts, overlap, or leave a hole are refused naming the file") {
  TempDir dir;
  const std::string p = dir.path + "/offsets.safetensors";
  auto write = [&](const std::string& tensors, size_t data_bytes) {
    std::string header = "{" + tensors + "}";
    while (header.size() % 8) header += ' ';
    std::string bytes(8, '\0');
    for (int b = 0; b < 8; ++b) bytes[size_t(b)] = char((uint64_t(header.size()) >> (8 * b)) & 0xff);
    write_all(p, bytes + header + std::string(data_bytes, '\0'));
  };
  const auto t = [](const char* name, int begin, int end, int n) {
    return str("\"", name, "\":{\"dtype\":\"F32\",\"shape\":[", n, "],\"data_offsets\":[", begin, ",", end, "]}");
  };
  write(t("a", 0, 8, 2) + "," + t("b", 8, 16, 2), 16);  // exact cover: read
  CHECK(load_safetensors(p).tensors.size() == 2);
  write(t("b", 8, 16, 2) + "," + t("a", 0, 8, 2) + "," + t("e", 16, 16, 0), 16);  // any order, an empty tensor
  CHECK(load_safetensors(p).tensors.size() == 3);
  struct Bad {
    std::string tensors;
    size_t bytes;
    const char* says;
  };
  for (const Bad& bad : {Bad{t("a", 0, 8, 2) + "," + t("b", 4, 12, 2), 12, "overlaps tensor 'a'"},
                         Bad{t("a", 0, 8, 2) + "," + t("b", 12, 20, 2), 20, "bytes 8 to 12"},
                         Bad{t("a", 4, 12, 2), 12, "bytes 0 to 4"},
                         Bad{t("a", 0, 8, 2), 12, "bytes 8 to 12"},
                         Bad{"\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\"x\",4]}", 4, "not two byte counts"},
                         Bad{"\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0.5,4.5]}", 5, "not two byte counts"},
                         Bad{"\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[1e19,4]}", 4, "not two byte counts"}}) {
    CAPTURE(bad.tensors);
    write(bad.tensors, bad.bytes);
    CHECK_THROWS_WITH_AS(load_safetensors(p), doctest::Contains("offsets.safetensors"), Error);
    CHECK_THROWS_WITH_AS(load_safetensors(p), doctest::Contains(bad.says), Error);
  }
}
