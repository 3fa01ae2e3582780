/* bench/cuda/memory_bound.cu: the backend's memory-bound kernels at the two models' shapes, against the
 * device's own copy bandwidth (#15's target: each at >= 70% of a device-to-device copy).
 *
 * Every case calls the CUDA backend's kernel table (engine/kernel_list.def: the launchers the engine
 * uses) on tensors of a model's shape, in float32 and bfloat16 where the kernel has both:
 *   resnet   (256, 256, 16, 16): ResNet-50 at batch 256 on 64x64 EuroSAT tiles, layer1's output (the
 *            stem's output, (256, 64, 32, 32), has as many elements: the max pool's input)
 *   dsen2cr  (16, 256, 128, 128): DSen2-CR B16/F256 at batch 16 on 128x128 crops, a body activation;
 *            its loss at the output, (16, 13, 128, 128)
 * and the optimisers' whole step (the engine's Adam, SGD with momentum and Nadam: one prepare and one
 * multi-tensor launch) and gradient-norm clipping (clip_grad_norm: the sums of squares, the coefficient,
 * the scaling) over ResNet-50's and DSen2-CR's parameters.
 * `bytes` is what a case must move at least: each operand read once, each result written once (a
 * kernel that reads twice, as the batch-norm statistics' two passes do, shows it as a lower fraction).
 * Clipping is the exception: it must read the gradients twice, since the norm of all of them comes before
 * any is scaled, so its bytes count both reads and the write.
 * The reference, timed in the same run right after each case: cudaMemcpyAsync of bytes / 2 from one
 * device buffer to another, which moves the same traffic; `fraction` = copy time / case time.
 *
 * Usage:
 *   bench_cuda_memory_bound     every case at a small shape: the CUDA table against the CPU table on the
 *                               same inputs (the emulator's ctest test; on a GPU too)
 *   gpu_bench_memory_bound --list | --case NAME|all [--budget-ms 150]
 *                               nvcc build: time each case at full size, one JSON row each
 * Exit status: 0 all passed, 1 a mismatch or failure, 2 bad usage, 77 no CUDA device.
 */
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "backends/cuda/backend.h"
#include "bench/cuda/bench_util.cuh"
#include "engine/backend.h"
#include "engine/optim/adam.h"
#include "engine/optim/clip_grad.h"
#include "engine/optim/nadam.h"
#include "engine/optim/sgd.h"
#include "engine/random.h"
#include "engine/tensor.h"
#include "models/dsen2cr.h"
#include "models/resnet.h"

using namespace nimbus;

namespace {

// The main tensor's shape (N, C, H, W); per-channel buffers have C floats.
struct Geo {
  int64_t N, C, H, W;
  int64_t n() const { return N * C * H * W; }
};
const Geo kResnet{256, 256, 16, 16}, kDsen2cr{16, 256, 128, 128}, kDsen2crOut{16, 13, 128, 128};
// Validation shapes: odd sizes, 525 elements (no multiple of a 16-byte pack: the element paths and the
// pack kernels' tails); planes of 24 (the pack paths, batch norm's too); and 4 images of 48x48 (each
// channel's 9,216 values over 2 blocks: batch norm's split kernels, packed).
const Geo kSmall{3, 5, 5, 7};
const Geo kSmallPacked{2, 5, 4, 6};
const Geo kSmallSplit{4, 3, 48, 48};
const Geo kSmallLoss{2, 3, 5, 7};

// What a kernel case gets: activation-sized buffers (their element types per the case's `kinds`, 'f' float
// or 'b' bfloat16), six per-channel float buffers (positive: usable as invstd, weights, counts) and a
// scratch of floats. All are filled before the run, the same values on every backend.
struct Bufs {
  std::vector<Tensor> act;
  std::vector<Tensor> chan;
  Tensor scratch;
  template <typename T>
  T* a(int i) {
    return act[size_t(i)].data_as<T>();
  }
  float* c(int i) { return chan[size_t(i)].data(); }
};

// A buffer a case writes: activation buffer `buf` (>= 0) or channel buffer -1 - buf, its first
// `extent` elements: 'n' the main tensor's, '4' four times that (the pool's input), 'c' C, '1' one.
// Validation poisons it with NaN first, so an element the kernel leaves unwritten fails; an in-out
// buffer (the running statistics) keeps its values (poison false).
struct Out {
  int buf;
  char extent;
  bool poison = true;
  int64_t count(const Geo& g) const {
    return extent == 'n' ? g.n() : extent == '4' ? 4 * g.n() : extent == 'c' ? g.C : 1;
  }
};

struct KernelCase {
  std::string name;  // op_shape_precision
  Geo full, small;
  std::string kinds;         // element type of each activation buffer
  std::vector<Out> outputs;
  bool exact;  // the CUDA table must give the CPU's bits (no arithmetic, or the same single rounding)
  double bytes;              // per element of the main tensor (full geometry), see the top
  std::function<void(const Backend& k, Bufs& b, const Geo& g)> run;
  int64_t act = 1;  // activation buffers hold act x the main tensor's elements (the pool's input: 4)
};

// Scratch for the losses: what either table asks for at g's size (the CUDA mean's partial sums too).
int64_t scratch_floats(const Geo& g) {
  return std::max({backend_tables(Device::CPU, "bench").f32.loss_scratch_floats(g.n()),
                   backend_tables(Device::CUDA, "bench").f32.loss_scratch_floats(g.n()), int64_t(1)});
}

PoolGeom stem_pool(const Geo& g) { return PoolGeom{g.N, g.C, 2 * g.H, 2 * g.W, 3, 2, 1}; }  // H, W of the pool's output

std::vector<KernelCase> kernel_cases() {
  std::vector<KernelCase> out;
  for (const bool bf16 : {false, true}) {
    const std::string p = bf16 ? "_bf16" : "_f32";
    const std::string t(1, bf16 ? 'b' : 'f');
    const double s = bf16 ? 2 : 4;  // bytes per element
    const auto both = [&](auto fn) {  // fn(k-tables of T, bufs, geo) in T
      return [bf16, fn](const Backend& k, Bufs& b, const Geo& g) {
        if (bf16)
          fn(k.bf16, b, g, static_cast<bfloat16*>(nullptr));
        else
          fn(k.f32, b, g, static_cast<float*>(nullptr));
      };
    };
    for (const auto& [shape, geo] : {std::pair<const char*, Geo>{"_resnet", kResnet}, {"_dsen2cr", kDsen2cr}}) {
      out.push_back({std::string("relu_forward") + shape + p, geo, kSmall, t + t, {{1, 'n'}}, true, 2 * s,
                     both([](const auto& k, Bufs& b, const Geo& g, auto* T) {
                       using E = std::remove_pointer_t<decltype(T)>;
                       k.relu_forward(b.a<E>(1), b.a<E>(0), g.n());
                     })});
      out.push_back({std::string("relu_backward") + shape + p, geo, kSmall, t + t + t, {{2, 'n'}}, true, 3 * s,
                     both([](const auto& k, Bufs& b, const Geo& g, auto* T) {
                       using E = std::remove_pointer_t<decltype(T)>;
                       k.relu_backward(b.a<E>(2), b.a<E>(0), b.a<E>(1), g.n());
                     })});
    }
    out.push_back({"add_relu_resnet" + p, kResnet, kSmall, t + t + t, {{2, 'n'}}, true, 3 * s,
                   both([](const auto& k, Bufs& b, const Geo& g, auto* T) {
                     using E = std::remove_pointer_t<decltype(T)>;
                     k.add_relu(b.a<E>(2), b.a<E>(0), b.a<E>(1), g.n());
                   })});
    out.push_back({"add_scaled_dsen2cr" + p, kDsen2cr, kSmall, t + t + t, {{2, 'n'}}, false, 3 * s,
                   both([](const auto& k, Bufs& b, const Geo& g, auto* T) {
                     using E = std::remove_pointer_t<decltype(T)>;
                     k.add_scaled(b.a<E>(2), b.a<E>(0), b.a<E>(1), 0.1f, g.n());
                   })});
    // Batch norm, training: the statistics (mean, invstd, running mean and variance, count), the
    // forward with its ReLU, and the backward through the batch statistics with the ReLU's mask.
    out.push_back({"batchnorm_stats_resnet" + p, kResnet, kSmall, t,
                   {{-1, 'c'}, {-2, 'c'}, {-3, 'c', false}, {-4, 'c', false}, {-5, '1', false}}, false, s,
                   both([](const auto& k, Bufs& b, const Geo& g, auto* T) {
                     using E = std::remove_pointer_t<decltype(T)>;
                     k.batchnorm_train_stats(b.c(0), b.c(1), b.c(2), b.c(3), b.c(4), b.a<E>(0), g.N, g.C, g.H * g.W,
                                             0.1f, 1e-5f);
                   })});
    out.push_back({"batchnorm_relu_forward_resnet" + p, kResnet, kSmall, t + t, {{1, 'n'}}, false, 2 * s,
                   both([](const auto& k, Bufs& b, const Geo& g, auto* T) {
                     using E = std::remove_pointer_t<decltype(T)>;
                     k.batchnorm_forward(b.a<E>(1), b.a<E>(0), b.c(0), b.c(1), b.c(2), b.c(3), g.N, g.C, g.H * g.W,
                                         true);
                   })});
    out.push_back({"batchnorm_relu_backward_resnet" + p, kResnet, kSmall, t + t + t + t,
                   {{3, 'n'}, {-5, 'c'}, {-6, 'c'}}, false, 4 * s,
                   both([](const auto& k, Bufs& b, const Geo& g, auto* T) {
                     using E = std::remove_pointer_t<decltype(T)>;
                     k.batchnorm_backward(b.a<E>(3), b.c(4), b.c(5), b.a<E>(0), b.a<E>(1), b.c(0), b.c(1), b.c(2),
                                          b.a<E>(2), g.N, g.C, g.H * g.W, true);
                   })});
    // The stem's 3x3 stride-2 max pool: (256, 64, 32, 32) -> (256, 64, 16, 16), as many input elements as
    // the resnet shape; the geometry names the output's planes (x has 4 times the elements of y).
    out.push_back({"max_pool_forward_resnet" + p, Geo{256, 64, 16, 16}, Geo{2, 5, 4, 3}, t + t, {{1, 'n'}}, true,
                   5 * s,
                   both([](const auto& k, Bufs& b, const Geo& g, auto* T) {
                     using E = std::remove_pointer_t<decltype(T)>;
                     k.max_pool2d_forward(b.a<E>(1), b.a<E>(0), stem_pool(g));
                   }),
                   4});
    out.push_back({"max_pool_backward_resnet" + p, Geo{256, 64, 16, 16}, Geo{2, 5, 4, 3}, t + t + t, {{2, '4'}}, true,
                   9 * s,
                   both([](const auto& k, Bufs& b, const Geo& g, auto* T) {
                     using E = std::remove_pointer_t<decltype(T)>;
                     k.max_pool2d_backward(b.a<E>(2), b.a<E>(1), b.a<E>(0), stem_pool(g));
                   }),
                   4});
  }
  // The casts between the precisions (autocast's), at DSen2-CR's activation size.
  out.push_back({"cast_f32_to_bf16_dsen2cr", kDsen2cr, kSmall, "fb", {{1, 'n'}}, true, 6,
                 [](const Backend& k, Bufs& b, const Geo& g) {
                   k.f32.cast_f32_to_bf16(b.a<bfloat16>(1), b.a<float>(0), g.n());
                 }});
  out.push_back({"cast_bf16_to_f32_dsen2cr", kDsen2cr, kSmall, "bf", {{1, 'n'}}, true, 6,
                 [](const Backend& k, Bufs& b, const Geo& g) {
                   k.f32.cast_bf16_to_f32(b.a<float>(1), b.a<bfloat16>(0), g.n());
                 }});
  // DSen2-CR's loss at its output: CARL (P, target, cloudy input, the cloud mask of one channel).
  out.push_back({"carl_forward_dsen2cr", kDsen2crOut, kSmallLoss, "ffff", {{-1, '1'}}, false, 4 * 3 + 4.0 / 13,
                 [](const Backend& k, Bufs& b, const Geo& g) {
                   k.f32.carl_forward(b.c(0), b.a<float>(0), b.a<float>(1), b.a<float>(2), b.a<float>(3), 1.0f, g.N,
                                      g.C, g.H * g.W, b.scratch.data());
                 }});
  out.push_back({"carl_backward_dsen2cr", kDsen2crOut, kSmallLoss, "fffff", {{4, 'n'}}, false, 4 * 4 + 4.0 / 13,
                 [](const Backend& k, Bufs& b, const Geo& g) {
                   k.f32.carl_backward(b.a<float>(4), b.a<float>(0), b.a<float>(1), b.a<float>(2), b.a<float>(3), 1.0f,
                                       b.c(0), g.N, g.C, g.H * g.W);
                 }});
  return out;
}

// Activation values: uniform in [-1, 1) from `rng` on the host (the small shapes: the same values on
// every device), or from a hash of (seed, index) on the GPU (the full sizes: hundreds of MB each).
Tensor activation(int64_t n, char kind, Device d, Rng& rng, uint64_t seed) {
#ifdef __CUDACC__
  if (d == Device::CUDA) {
    Tensor v = Tensor::empty({n}, d);
    fill_uniform(v.data(), n, seed);
    return kind == 'b' ? v.to(DType::BF16) : v;
  }
#else
  (void)seed;
#endif
  const Tensor v = Tensor::uniform({n}, rng, -1.0f, 1.0f);
  return (kind == 'b' ? v.to(DType::BF16) : v).to(d);
}

// Buffers for case `c` at `g` on `d`, filled from `seed`: activations uniform in [-1, 1), channel
// buffers in [0.5, 1.5).
Bufs make_bufs(const KernelCase& c, const Geo& g, Device d, uint64_t seed) {
  Rng rng(seed);
  Bufs b;
  for (char kind : c.kinds) b.act.push_back(activation(c.act * g.n(), kind, d, rng, seed += 0x9e3779b9));
  for (int i = 0; i < 6; ++i) b.chan.push_back(Tensor::uniform({g.C}, rng, 0.5f, 1.5f).to(d));
  b.scratch = Tensor::zeros({scratch_floats(g)}, d);
  return b;
}

Tensor& buffer(Bufs& b, const Out& o) { return o.buf >= 0 ? b.act[size_t(o.buf)] : b.chan[size_t(-1 - o.buf)]; }

// An output buffer's first count(g) values as floats on the host.
std::vector<float> values(Bufs& b, const Out& o, const Geo& g) {
  std::vector<float> v = buffer(b, o).to(Device::CPU).to(DType::F32).to_vector();
  v.resize(size_t(o.count(g)));
  return v;
}

// NaN in every element of the output buffers that are not in-out.
void poison(Bufs& b, const KernelCase& c) {
  for (const Out& o : c.outputs)
    if (o.poison) {
      Tensor& t = buffer(b, o);
      const Tensor nan = Tensor::full(t.shape(), NAN);
      t = (t.dtype() == DType::BF16 ? nan.to(DType::BF16) : nan).to(t.device());
    }
}

// Small shapes, every case: the CUDA table against the CPU table on the same inputs. Exact cases bit for
// bit (as floats); others: float outputs within 1e-4 of 1 + |cpu| (the reductions sum in another order:
// float trees against double), bfloat16 outputs within two of their roundings (2^-7 of 1 + |cpu|). NaN
// fails.
bool validate_kernel_case(const KernelCase& c) {
  const Geo& g = c.small;
  Bufs cpu = make_bufs(c, g, Device::CPU, 7), gpu = make_bufs(c, g, Device::CUDA, 7);
  poison(cpu, c), poison(gpu, c);
  c.run(backend_tables(Device::CPU, "bench"), cpu, g);
  c.run(backend_tables(Device::CUDA, "bench"), gpu, g);
  double worst = 0;
  for (const Out& o : c.outputs) {
    const bool bf16 = o.buf >= 0 && c.kinds[size_t(o.buf)] == 'b';
    const double tol = c.exact ? 1e-30 : bf16 ? std::ldexp(1.0, -7) : 1e-4;
    const std::vector<float> want = values(cpu, o, g), got = values(gpu, o, g);
    for (size_t i = 0; i < want.size(); ++i) {
      const double e = std::fabs(double(got[i]) - want[i]) / (tol * (1 + std::fabs(double(want[i]))));
      worst = std::isfinite(e) ? std::max(worst, e) : INFINITY;
    }
  }
  const bool ok = worst <= 1;
  std::printf("%-36s small (%ld,%ld,%ld,%ld): CUDA vs CPU %s (%.3g of tolerance)\n", c.name.c_str(), long(g.N),
              long(g.C), long(g.H), long(g.W), ok ? "OK" : "WRONG", worst);
  return ok;
}

// ---- the optimisers' step, and clipping, over a model's parameters -----------------------------------
struct OptimCase {
  std::string name;
  bool resnet;  // ResNet-50's parameters, else DSen2-CR B16/F256's
  double bytes_per_param;
  // What one run does to the parameters and their gradients (the returned function).
  std::function<std::function<void()>(const NamedTensors& p)> make;
};

template <typename Opt, typename Options>
std::function<std::function<void()>(const NamedTensors&)> stepping(Options o) {
  return [o](const NamedTensors& p) {
    const std::shared_ptr<Optimizer> opt = std::make_shared<Opt>(p, o);
    return std::function<void()>([opt] { opt->step(); });
  };
}

std::vector<OptimCase> optim_cases() {
  // Clipping to a norm below the gradients' (each run scales them once more, by about 1 after the first).
  const auto clipping = [](const NamedTensors& p) { return std::function<void()>([p] { clip_grad_norm(p, 1.0); }); };
  return {
      // Adam: reads p, g, m, v and writes p, m, v: 7 floats a parameter.
      {"adam_step_resnet50", true, 28, stepping<Adam>(AdamOptions{})},
      // SGD with momentum: reads p, g, the velocity, writes p and the velocity: 5.
      {"sgd_momentum_step_resnet50", true, 20, stepping<SGD>(SGDOptions{0.1, 0.9})},
      {"nadam_step_dsen2cr", false, 28, stepping<Nadam>(NadamOptions{})},
      // Clipping: reads g for the sums, then reads and writes it: 3 floats a parameter.
      {"clip_grad_norm_resnet50", true, 12, clipping},
      {"clip_grad_norm_dsen2cr", false, 12, clipping},
  };
}

// The parameters (with gradients) of the case's model on `d`: full size, or small (a ResNet-18 of width 4 /
// a DSen2-CR of 2 blocks of 8 features) for validation; the same values for the same `small` on every device.
NamedTensors make_params(const OptimCase& c, bool small, Device d) {
  Rng rng(11);
  NamedTensors params;
  const auto add = [&](const NamedTensors& from) {
    for (const auto& [name, t] : from) {
      Tensor p = t.to(d).detach().clone();
      p.set_requires_grad(true);
      p.set_grad(Tensor::uniform(t.shape(), rng, -1.0f, 1.0f).to(d));
      params.push_back({name, p});
    }
  };
  if (c.resnet) {
    models::ResNetConfig cfg = small ? models::resnet18_config() : models::resnet50_config();
    if (small) cfg.width = 4;
    Rng init(3);
    add(models::ResNet(cfg, init).named_parameters());
  } else {
    models::DSen2CRConfig cfg;
    cfg.blocks = small ? 2 : 16;
    cfg.features = small ? 8 : 256;
    Rng init(3);
    add(models::DSen2CR(cfg, init).named_parameters());
  }
  return params;
}

// Two runs on the CPU and on CUDA from the same parameters and gradients: every parameter and gradient
// within 1e-5 of 1 + |cpu| (the same formulas; fused multiply-adds may round differently).
bool validate_optim_case(const OptimCase& c) {
  NamedTensors cpu = make_params(c, true, Device::CPU), gpu = make_params(c, true, Device::CUDA);
  const std::function<void()> a = c.make(cpu), b = c.make(gpu);
  for (int i = 0; i < 2; ++i) a(), b();
  double worst = 0;
  int64_t count = 0;
  const auto compare = [&](const Tensor& want_t, const Tensor& got_t) {
    const std::vector<float> want = want_t.to_vector(), got = got_t.to(Device::CPU).to_vector();
    count += int64_t(want.size());
    for (size_t j = 0; j < want.size(); ++j) {
      const double e = std::fabs(double(got[j]) - want[j]) / (1e-5 * (1 + std::fabs(double(want[j]))));
      worst = std::isfinite(e) ? std::max(worst, e) : INFINITY;
    }
  };
  for (size_t i = 0; i < cpu.size(); ++i) {
    compare(cpu[i].second, gpu[i].second);
    compare(cpu[i].second.grad(), gpu[i].second.grad());
  }
  const bool ok = worst <= 1;
  std::printf("%-36s small (%zu tensors, %ld values): two runs, CUDA vs CPU %s (%.3g of tolerance)\n", c.name.c_str(),
              cpu.size(), long(count), ok ? "OK" : "WRONG", worst);
  return ok;
}

// ---- the program ------------------------------------------------------------------------------------
struct Case {
  const char* name;
  int kernel = -1, optim = -1;  // index into kernel_cases() or optim_cases()
};
std::vector<Case> cases() {
  static const std::vector<KernelCase> kc = kernel_cases();
  static const std::vector<OptimCase> oc = optim_cases();
  std::vector<Case> out;
  for (size_t i = 0; i < kc.size(); ++i) out.push_back({kc[i].name.c_str(), int(i), -1});
  for (size_t i = 0; i < oc.size(); ++i) out.push_back({oc[i].name.c_str(), -1, int(i)});
  return out;
}

bool validate_small(const std::vector<int>&) {
  if (!cuda::register_cuda_backend()) {
    std::printf("no CUDA backend: %s\n", cuda_status().c_str());
    return false;
  }
  bool ok = true;
  const std::vector<KernelCase> kc = kernel_cases();
  const std::vector<OptimCase> oc = optim_cases();
  for (KernelCase c : kc) try {
      ok = validate_kernel_case(c) && ok;
      if (c.small.n() == kSmall.n())  // the activation cases: their pack paths and split kernels too
        for (const Geo& g : {kSmallPacked, kSmallSplit}) {
          c.small = g;
          ok = validate_kernel_case(c) && ok;
        }
    } catch (const std::exception& e) {
      std::printf("%-36s WRONG: %s\n", c.name.c_str(), e.what());
      ok = false;
    }
  for (const OptimCase& c : oc) try {
      ok = validate_optim_case(c) && ok;
    } catch (const std::exception& e) {
      std::printf("%-36s WRONG: %s\n", c.name.c_str(), e.what());
      ok = false;
    }
  return ok;
}

#ifdef __CUDACC__
// How many copies of a working set of `bytes` the timed runs rotate through, so that each run reads
// from HBM and not from the L2 the previous run filled (H200: 50 MB, and ResNet-50's bf16 activations
// are 33 MB): together at least three L2s, 16 sets at most.
int rotation(double bytes) {
  int l2 = 0;
  CK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
  return int(std::clamp(std::ceil(3.0 * double(l2) / std::max(bytes, 1.0)), 1.0, 16.0));
}

// The reference: a device-to-device copy moving the same traffic (bytes / 2 read and written), over
// as many buffer pairs as the kernel's rotation.
double copy_ms(double bytes, double budget_ms) {
  const size_t half = size_t(bytes / 2) / 16 * 16;
  std::vector<std::unique_ptr<DevBuf>> from, to;
  for (int r = 0; r < rotation(bytes); ++r) {
    from.push_back(std::make_unique<DevBuf>(half)), to.push_back(std::make_unique<DevBuf>(half));
    CK(cudaMemset(from.back()->p, 0, half));
  }
  size_t i = 0;
  return time_runs([&] {
           const size_t r = i++ % from.size();
           CK(cudaMemcpyAsync(to[r]->p, from[r]->p, half, cudaMemcpyDeviceToDevice, nullptr));
         }, budget_ms)
      .median;
}

void print_row(const char* name, const std::string& shape, double bytes, const Timing& t, double copy,
               const std::string& device) {
  Row r;
  r.str("case", "memory_bound").str("op", name).str("shape", shape).num("bytes", bytes).num("ms", t.median);
  r.num("p10_ms", t.p10).num("p90_ms", t.p90).num("runs", t.runs).num("gbs", bytes / (t.median * 1e6));
  r.num("copy_ms", copy).num("copy_gbs", bytes / (copy * 1e6)).num("fraction", copy / t.median);
  r.str("device", json_escape(device)).boolean("ok", true);
  r.print();
}

// A case that threw (out of memory for its rotation sets, a kernel the backend refused): its row says
// so, and the program goes on to the next case.
void print_failed_row(const std::string& name, const std::string& error, const std::string& device) {
  Row r;
  r.str("case", "memory_bound").str("op", name).boolean("ok", false).str("error", json_escape(error));
  r.str("device", json_escape(device));
  r.print();
}

bool time_case(const Case& cs, const Backend& k, double budget_ms, const std::string& device);

bool run_case(const Case& cs, const std::vector<int>&, double budget_ms, const std::string& device) {
  if (!cuda::register_cuda_backend()) {
    std::fprintf(stderr, "no CUDA backend: %s\n", cuda_status().c_str());
    return false;
  }
  const Backend& k = backend_tables(Device::CUDA, "bench");
  // The backend's work on the legacy default stream, where time_runs records its events (the backend's
  // own compute stream is non-blocking: events on the legacy stream would not wait for it).
  cuda::set_current_stream(nullptr);
  const std::string name = cs.kernel >= 0 ? kernel_cases()[size_t(cs.kernel)].name : optim_cases()[size_t(cs.optim)].name;
  try {
    return time_case(cs, k, budget_ms, device);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: FAILED: %s\n", name.c_str(), e.what());
    print_failed_row(name, e.what(), device);
    (void)cudaGetLastError();  // a launch error must not fail the next case too (a kernel fault is sticky: it would)
    return false;
  }
}

bool time_case(const Case& cs, const Backend& k, double budget_ms, const std::string& device) {
  if (cs.kernel >= 0) {
    const KernelCase c = kernel_cases()[size_t(cs.kernel)];
    const double bytes = c.bytes * double(c.full.n());
    std::vector<Bufs> sets;  // rotated: each run's inputs come from HBM (see rotation)
    for (int r = 0; r < rotation(bytes); ++r) sets.push_back(make_bufs(c, c.full, Device::CUDA, 5 + uint64_t(r)));
    size_t i = 0;
    const Timing t = time_runs([&] { c.run(k, sets[i++ % sets.size()], c.full); }, budget_ms);
    const Geo& g = c.full;
    print_row(c.name.c_str(), str("(", g.N, ",", g.C, ",", g.H, ",", g.W, ")"), bytes, t, copy_ms(bytes, budget_ms),
              device);
    return true;
  }
  const OptimCase c = optim_cases()[size_t(cs.optim)];
  const NamedTensors params = make_params(c, false, Device::CUDA);
  int64_t count = 0;
  for (const auto& [name, p] : params) count += p.numel();
  const std::function<void()> run = c.make(params);
  run();  // an optimiser's slots exist from the first step on
  const double bytes = c.bytes_per_param * double(count);
  const Timing t = time_runs(run, budget_ms);
  print_row(c.name.c_str(), str(params.size(), " tensors, ", count, " parameters"), bytes, t, copy_ms(bytes, budget_ms),
            device);
  return true;
}
#else
constexpr RunCase<Case> run_case = nullptr;
#endif

}  // namespace

int main(int argc, char** argv) {
  return bench_main(argc, argv, BenchProgram<Case>{"gpu_bench_memory_bound", "the CUDA runtime", 1, cases(),
                                                   validate_small, run_case});
}
