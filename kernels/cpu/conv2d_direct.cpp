// conv2d_direct.cpp: the direct convolutions: 3x3 stride 1, the 1x1 tile and the k-vectorised tile
// (see conv2d_direct.h for the maths and why they share a file).
//
// Tile sizes (forward 8 outputs x 3 pixel vectors with the taps unrolled at compile time, weight
// gradient 3 x 9 accumulators) were chosen by measurement: docs/perf-notes.md, "Direct 3x3 tiles".
#include "kernels/cpu/conv2d_direct.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "kernels/cpu/elementwise.h"  // relu_forward
#include "kernels/cpu/gemm.h"  // bias_backward
#include "kernels/cpu/planes.h"
#include "kernels/common/parallel.h"
#include "kernels/cpu/simd.h"

namespace nimbus::cpu {

using simd::kLanes;
using simd::Vec16;

namespace {
constexpr int kTaps = 9;                // 3 x 3
constexpr int kKB = 8;                  // forward tile: output channels ...
constexpr int kV = 3;                   // ... x pixel vectors
constexpr int kKV = 3;                  // weight-gradient tile: vectors of output channels (x 9 taps)
constexpr int64_t kBlockPixels = 128;   // weight gradient: pixels per block of dy^T (one group's slice in L1)

int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }
int64_t blocks(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Row-interleaved planes of C channels for the q-vectorised 3x3 kernels
// producing rows of Q outputs.
Planes row_planes(int64_t H, int64_t W, int64_t pad, int64_t Q, int64_t C) {
  return Planes(H, W, pad, round_up(Q, kLanes) + 2, C, true);
}

// Weights for both tile kernels: wpk[ob][i][t][j] = weight from input i to
// output ob*B + j at tap t (0 past the last output), so a tile reads B
// consecutive floats: B = 8 broadcasts (q-vectorised) or one 16-lane vector
// (k-vectorised). w is (K, C, R, S), RS = R*S taps. Forward: outputs K, inputs
// C. For a stride-1 dx (flip): outputs C, inputs K, taps reversed
// (t -> RS-1-t is (r, s) -> (R-1-r, S-1-s)).
void pack_weights(float* wpk, const float* w, int64_t K, int64_t C, int64_t RS, bool flip, int B) {
  const int64_t O = flip ? C : K, I = flip ? K : C;
#pragma omp parallel for if (O * I * RS > kParallelGrain)
  for (int64_t ob = 0; ob < blocks(O, B); ++ob)
    for (int64_t i = 0; i < I; ++i)
      for (int64_t t = 0; t < RS; ++t)
        for (int j = 0; j < B; ++j) {
          const int64_t o = ob * B + j;
          float v = 0.f;
          if (o < O) v = flip ? w[(i * C + o) * RS + (RS - 1 - t)] : w[(o * C + i) * RS + t];
          wpk[((ob * I + i) * RS + t) * B + j] = v;
        }
}

// ---------------- forward (and dx): vectorised along q ----------------

// Up to kV vectors of 16 output pixels of one image, anywhere in it: vector v
// starts at input offset xoff (in the padded plane) and output offset yoff,
// and has `lanes` real pixels (fewer than 16 at the end of a row).
struct PixelTile {
  int64_t xoff[kV], yoff[kV];
  int lanes[kV];
};

// Outputs [k0, k0 + kn) over the tile's pixels for a KS x KS kernel (3, or 1:
// pointwise_conv). xp: C padded planes; wblk: the packed block of these
// outputs; y: (K, P*Q) planes, PQ floats apart.
template <int V, int KS = 3>
void forward_tile(float* y, const float* xp, const float* wblk, const float* b, int64_t k0, int64_t kn, int64_t C,
                  int64_t PQ, const Planes& pl, const PixelTile& t, bool relu) {
  Vec16 acc[kKB][V];
#pragma GCC unroll 8
  for (int i = 0; i < kKB; ++i) {
    const Vec16 bias = simd::splat(b && i < kn ? b[k0 + i] : 0.f);
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[i][v] = bias;
  }
  for (int64_t c = 0; c < C; ++c) {
    const float* xc = xp + c * pl.cs;
    const float* wc = wblk + c * KS * KS * kKB;
#pragma GCC unroll 3
    for (int r = 0; r < KS; ++r)
#pragma GCC unroll 3
      for (int s = 0; s < KS; ++s) {
        Vec16 xv[V];
#pragma GCC unroll 4
        for (int v = 0; v < V; ++v) xv[v] = simd::load(xc + t.xoff[v] + r * pl.rs + s);
        const float* wt = wc + (r * KS + s) * kKB;
#pragma GCC unroll 8
        for (int i = 0; i < kKB; ++i) {
          const Vec16 wi = simd::splat(wt[i]);
#pragma GCC unroll 4
          for (int v = 0; v < V; ++v) acc[i][v] += wi * xv[v];
        }
      }
  }
  if (relu)  // the fused ReLU (conv2d_relu), relu_forward's rule: a NaN passes through
#pragma GCC unroll 8
    for (int i = 0; i < kKB; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) acc[i][v] = acc[i][v] < 0.f ? Vec16{} : acc[i][v];
  for (int64_t i = 0; i < kn; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      float* dst = y + (k0 + i) * PQ + t.yoff[v];
      if (t.lanes[v] == kLanes) simd::store(dst, acc[i][v]);
      else simd::store_first(dst, acc[i][v], t.lanes[v]);
    }
}

// Every block of kKB outputs over one pixel tile of nv (1..kV) vectors; wpk
// packed for a KS x KS kernel.
template <int KS>
void tile_all_outputs(float* y, const float* xp, const float* wpk, const float* b, int64_t C, int64_t K,
                      int64_t PQ, const Planes& pl, const PixelTile& t, int nv, bool relu) {
  for (int64_t kb = 0; kb < blocks(K, kKB); ++kb) {
    const int64_t k0 = kb * kKB, kn = std::min<int64_t>(kKB, K - k0);
    const float* wb = wpk + kb * C * KS * KS * kKB;
    switch (nv) {
      case 3: forward_tile<3, KS>(y, xp, wb, b, k0, kn, C, PQ, pl, t, relu); break;
      case 2: forward_tile<2, KS>(y, xp, wb, b, k0, kn, C, PQ, pl, t, relu); break;
      default: forward_tile<1, KS>(y, xp, wb, b, k0, kn, C, PQ, pl, t, relu); break;
    }
  }
}

// y (N, K, P, Q) = b + 3x3 convolution of the padded planes xp (N images x C
// planes) with the packed weights wpk. Threads split (image, pixel tile) pairs.
void direct_conv(float* y, const float* xp, const float* wpk, const float* b, int64_t N, int64_t C, int64_t K,
                 int64_t P, int64_t Q, const Planes& pl, bool relu) {
  const int64_t per_row = blocks(Q, kLanes), nvec = P * per_row, ntiles = blocks(nvec, kV);
  const int64_t PQ = P * Q;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t tile = 0; tile < ntiles; ++tile) {
      PixelTile t{};
      const int nv = int(std::min<int64_t>(kV, nvec - tile * kV));
      for (int v = 0; v < nv; ++v) {
        const int64_t j = tile * kV + v, p = j / per_row, q = (j % per_row) * kLanes;
        t.xoff[v] = p * pl.rs + q;
        t.yoff[v] = p * Q + q;
        t.lanes[v] = int(std::min<int64_t>(kLanes, Q - q));
      }
      tile_all_outputs<3>(y + n * K * PQ, xp + n * C * pl.L, wpk, b, C, K, PQ, pl, t, nv, relu);
    }
}

// y (N, K, PQ) = b + w (K, C) x (N, C, PQ), a 1x1 convolution with PQ a
// multiple of 16: forward_tile with one tap, straight on the NCHW tensor (no
// padding needed). A tile's vectors may come from different images, so 4x4
// images (one vector each) still fill 3-vector tiles. Against OpenBLAS's
// per-image GEMMs this skips packing and C's zero fill and keeps 24 accumulators
// in registers for the whole reduction.
void pointwise_conv(float* y, const float* x, const float* wpk, const float* b, int64_t N, int64_t C, int64_t K,
                    int64_t PQ, bool relu) {
  const Planes pl(1, PQ, 0, 0);  // channel stride PQ
  const int64_t per_img = PQ / kLanes, nvec = N * per_img, ntiles = blocks(nvec, kV);
#pragma omp parallel for schedule(static)
  for (int64_t tile = 0; tile < ntiles; ++tile) {
    PixelTile t{};
    const int nv = int(std::min<int64_t>(kV, nvec - tile * kV));
    for (int v = 0; v < nv; ++v) {
      const int64_t j = tile * kV + v, n = j / per_img, q = (j % per_img) * kLanes;
      t.xoff[v] = n * C * PQ + q;
      t.yoff[v] = n * K * PQ + q;
      t.lanes[v] = kLanes;
    }
    tile_all_outputs<1>(y, x, wpk, b, C, K, PQ, pl, t, nv, relu);
  }
}

// ---------------- forward vectorised along k (any kernel size, stride, padding) ----------------
// For images too small to fill a 16-pixel row vector (ResNet's 8x8 .. 2x2
// stages) and for strided convolutions (ResNet's 7x7 stem): a tile is 6 output
// pixels (anywhere in the batch) x 4 vectors of 16 output channels = 24
// accumulators; per (c, r, s) it loads 4 weight vectors and broadcasts 6 input
// floats (any stride: a broadcast reads one float). Outputs leave the vectors
// as scalar stores into the NCHW planes (~2% of the work for the 7x7 stem).
constexpr int kPT = 6;  // pixels per k-vectorised tile
constexpr int kKT = 4;  // vectors of output channels per k-vectorised tile

// Outputs [k0, k0 + kn) (KT vectors from wk, kv_stride floats apart) at the
// tile's pixels: pixel i reads from xb[i] (its window's corner at c = 0) and
// writes y[yoff[i] + k*PQ]; yoff < 0 marks a padding pixel of the last tile.
template <int KT>
void kvec_tile(float* y, const float* const xb[kPT], const int64_t yoff[kPT], const float* wk, int64_t kv_stride,
               const float* b, int64_t k0, int64_t kn, int64_t C, int64_t R, int64_t S, const Planes& pl,
               int64_t PQ) {
  Vec16 acc[kPT][KT] = {};
  for (int64_t c = 0; c < C; ++c)
    for (int64_t r = 0; r < R; ++r) {
      const int64_t row = c * pl.cs + r * pl.rs;
      const float* wr = wk + (c * R + r) * S * kLanes;
      for (int64_t s = 0; s < S; ++s) {
        Vec16 wv[KT];
#pragma GCC unroll 4
        for (int v = 0; v < KT; ++v) wv[v] = simd::load(wr + s * kLanes + v * kv_stride);
#pragma GCC unroll 6
        for (int i = 0; i < kPT; ++i) {
          const Vec16 xs = simd::splat(xb[i][row + s]);
#pragma GCC unroll 4
          for (int v = 0; v < KT; ++v) acc[i][v] += xs * wv[v];
        }
      }
    }
  for (int i = 0; i < kPT; ++i) {
    if (yoff[i] < 0) continue;
    for (int64_t k = 0; k < kn; ++k)
      y[yoff[i] + (k0 + k) * PQ] = acc[i][k / kLanes][k % kLanes] + (b ? b[k0 + k] : 0.f);
  }
}

// y (N, K, P, Q) = b + convolution of the planes xp (N images x C planes of
// pl, already padded) with wk (pack_weights, B = 16). Threads split (group of 64
// outputs, pixel tile) pairs, group-major: a thread sweeps all its tiles
// with one group's weights (C*R*S*64 floats) hot in its L2.
void kvec_conv(float* y, const float* xp, const float* wk, const float* b, int64_t N, int64_t C, int64_t K, int64_t R,
               int64_t S, int64_t stride, int64_t P, int64_t Q, const Planes& pl) {
  const int64_t PQ = P * Q, npix = N * PQ, nkv = blocks(K, kLanes), kv_stride = C * R * S * kLanes;
  const int64_t ntiles = blocks(npix, kPT);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t kv0 = 0; kv0 < nkv; kv0 += kKT)
    for (int64_t tile = 0; tile < ntiles; ++tile) {
      const float* xb[kPT];
      int64_t yoff[kPT];
      for (int i = 0; i < kPT; ++i) {
        const int64_t j = std::min(tile * kPT + i, npix - 1), n = j / PQ, pq = j % PQ;
        xb[i] = xp + n * C * pl.L + (pq / Q) * stride * pl.rs + (pq % Q) * stride;
        yoff[i] = tile * kPT + i < npix ? n * K * PQ + pq : -1;
      }
      const int64_t k0 = kv0 * kLanes, kn = std::min(K - k0, int64_t(kKT) * kLanes);
      const float* wg = wk + kv0 * kv_stride;
      switch (std::min<int64_t>(kKT, nkv - kv0)) {
        case 4: kvec_tile<4>(y, xb, yoff, wg, kv_stride, b, k0, kn, C, R, S, pl, PQ); break;
        case 3: kvec_tile<3>(y, xb, yoff, wg, kv_stride, b, k0, kn, C, R, S, pl, PQ); break;
        case 2: kvec_tile<2>(y, xb, yoff, wg, kv_stride, b, k0, kn, C, R, S, pl, PQ); break;
        default: kvec_tile<1>(y, xb, yoff, wg, kv_stride, b, k0, kn, C, R, S, pl, PQ); break;
      }
    }
}

// ---------------- weight gradient: vectorised along k ----------------

// Output lanes in groups of at most kKV vectors, as even as possible (16 = 3+3+3+3+2+2,
// not 3*5+1: a 1-vector tile runs at about half the speed). Group g holds vectors
// [kv0, kv1) of the nkv = Kp/16.
struct LaneGroups {
  int64_t nkv, count;
  explicit LaneGroups(int64_t Kp) : nkv(Kp / kLanes), count(blocks(nkv, kKV)) {}
  int64_t kv0(int64_t g) const { return nkv * g / count; }
  int64_t kv1(int64_t g) const { return nkv * (g + 1) / count; }
};

// dst[c*ld + r] = src[r*ls + c] for r < rows, c < cols: 16 x 16 blocks go
// through registers (simd::transpose16), the edges one float at a time.
void transpose(float* dst, int64_t ld, const float* src, int64_t ls, int64_t rows, int64_t cols) {
  for (int64_t r0 = 0; r0 < rows; r0 += kLanes) {
    const int64_t rn = std::min<int64_t>(kLanes, rows - r0);
    int64_t c0 = 0;
    if (rn == kLanes)
      for (; c0 + kLanes <= cols; c0 += kLanes) {
        Vec16 v[kLanes];
#pragma GCC unroll 16
        for (int i = 0; i < kLanes; ++i) v[i] = simd::load(src + (r0 + i) * ls + c0);
        simd::transpose16(v);
#pragma GCC unroll 16
        for (int i = 0; i < kLanes; ++i) simd::store(dst + (c0 + i) * ld + r0, v[i]);
      }
    for (int64_t c = c0; c < cols; ++c)
      for (int64_t r = r0; r < r0 + rn; ++r) dst[c * ld + r] = src[r * ls + c];
  }
}

// dy transposed to pixel-major and blocked by lane group: group g of image n is
// a (P*Q, w) matrix, w = its lanes, at dyT + n*PQ*Kp + kv0*16*PQ, so one group's
// rows of a block of pixels are contiguous (0 past K). In registers, 16 x 16
// at a time: 2.4 -> 1.4 ms for 256 x 128x128 (scalar stores 192 B apart before).
void transpose_dy(float* dyT, const float* dy, int64_t N, int64_t K, int64_t PQ, int64_t Kp) {
  constexpr int64_t kJ = 64;  // pixels per task
  const LaneGroups lg(Kp);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j0 = 0; j0 < PQ; j0 += kJ) {
      const int64_t j1 = std::min(PQ, j0 + kJ);
      for (int64_t g = 0; g < lg.count; ++g) {
        const int64_t k0 = lg.kv0(g) * kLanes, k1 = lg.kv1(g) * kLanes, w = k1 - k0;
        float* d = dyT + n * PQ * Kp + k0 * PQ;
        for (int64_t kb = k0; kb < std::min(K, k1); kb += kLanes)
          transpose(d + j0 * w + kb - k0, w, dy + (n * K + kb) * PQ + j0, PQ, std::min<int64_t>(kLanes, K - kb),
                    j1 - j0);
        if (K < k1)
          for (int64_t j = j0; j < j1; ++j) std::fill(d + j * w + std::max<int64_t>(K - k0, 0), d + (j + 1) * w, 0.f);
      }
    }
}

// Adds, for input channel c and output lanes [kv0*16, (kv0+KV)*16), the pixels
// of rows [p0, p1) of one image to dwT[c][t][k] (in memory between blocks).
template <int KV>
void weight_tile(float* dwT, const float* dyT, const float* xp, int64_t c, int64_t kv0, int64_t p0, int64_t p1,
                 int64_t Q, int64_t Kp, const Planes& pl) {
  float* a = dwT + c * kTaps * Kp + kv0 * kLanes;
  Vec16 acc[KV][kTaps];
#pragma GCC unroll 4
  for (int i = 0; i < KV; ++i)
#pragma GCC unroll 9
    for (int t = 0; t < kTaps; ++t) acc[i][t] = simd::load(a + t * Kp + i * kLanes);
  const float* xc = xp + c * pl.cs;
  for (int64_t p = p0; p < p1; ++p) {
    const float* x0 = xc + p * pl.rs;
    const int64_t W1 = pl.rs, W2 = 2 * pl.rs;
    const float* d = dyT + p * Q * KV * kLanes;
    for (int64_t q = 0; q < Q; ++q, d += KV * kLanes) {
      // Hide from the compiler that x0[q+1] now is x0[q] next time: it would keep
      // the float in a register and broadcast it on port 5, which the 512-bit
      // FMAs need; a broadcast straight from memory only uses a load port.
      int64_t j = q;
      asm("" : "+r"(j));
      const float* x[3] = {x0 + j, x0 + W1 + j, x0 + W2 + j};
      Vec16 dv[KV];
#pragma GCC unroll 4
      for (int i = 0; i < KV; ++i) dv[i] = simd::load(d + i * kLanes);
#pragma GCC unroll 3
      for (int r = 0; r < 3; ++r)
#pragma GCC unroll 3
        for (int s = 0; s < 3; ++s) {
          const Vec16 xs = simd::splat(x[r][s]);
#pragma GCC unroll 4
          for (int i = 0; i < KV; ++i) acc[i][r * 3 + s] += dv[i] * xs;
        }
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < KV; ++i)
#pragma GCC unroll 9
    for (int t = 0; t < kTaps; ++t) simd::store(a + t * Kp + i * kLanes, acc[i][t]);
}

// dw (K, C, 3, 3) from dyT (transpose_dy) and the padded x planes. Tasks are
// (input channel, lane group); each thread owns an equal share of them,
// numbered c-major (so a thread's share is whole channels but for its two ends;
// tasks write disjoint parts of dwT: no reduction between threads), and sweeps
// every image in blocks of kBlockPixels (at least one row), group-major within
// a block: the group's slice of the dyT block (24 KiB for 128 pixels x 3
// vectors, contiguous) stays in L1 while the thread's channels stream past it.
// (Sweeping all groups per channel read the whole dyT block from L2 for every
// channel: 68% of peak against 77% at 256 -> 256, 128x128, transposes included.)
void direct_weight_grad(float* dw, float* dwT, const float* dyT, const float* xp, int64_t N, int64_t C, int64_t K,
                        int64_t P, int64_t Q, int64_t Kp, const Planes& pl) {
  std::fill(dwT, dwT + C * kTaps * Kp, 0.f);
  const LaneGroups lg(Kp);
  const int64_t groups = lg.count, tasks = C * groups;
  const int64_t rows = std::max<int64_t>(1, kBlockPixels / Q);
#pragma omp parallel
  {
    const int64_t nth = omp_get_num_threads(), me = omp_get_thread_num();
    const int64_t t0 = tasks * me / nth, t1 = tasks * (me + 1) / nth;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t p0 = 0; p0 < P; p0 += rows) {
        const int64_t p1 = std::min(P, p0 + rows);
        const float* xn = xp + n * C * pl.L;
        for (int64_t grp = 0; grp < groups; ++grp) {
          const int64_t kv0 = lg.kv0(grp), kv1 = lg.kv1(grp);
          const float* dyg = dyT + n * P * Q * Kp + kv0 * kLanes * P * Q;
          for (int64_t c = t0 / groups; c * groups < t1; ++c) {
            const int64_t task = c * groups + grp;
            if (task < t0 || task >= t1) continue;
            switch (kv1 - kv0) {
              case 3: weight_tile<3>(dwT, dyg, xn, c, kv0, p0, p1, Q, Kp, pl); break;
              case 2: weight_tile<2>(dwT, dyg, xn, c, kv0, p0, p1, Q, Kp, pl); break;
              default: weight_tile<1>(dwT, dyg, xn, c, kv0, p0, p1, Q, Kp, pl); break;
            }
          }
        }
      }
  }
  // dw (K, C*9) = dwT (C*9, Kp)^T, in blocks of 16 rows of dwT.
  const int64_t CT = C * kTaps;
#pragma omp parallel for if (K * CT > kParallelGrain)
  for (int64_t r0 = 0; r0 < CT; r0 += kLanes)
    transpose(dw + r0, CT, dwT + r0 * Kp, Kp, std::min<int64_t>(kLanes, CT - r0), K);
}

// Planes for the input of a stride-1 3x3 convolution whose output rows are Q
// wide: the q-vectorised kernel needs room for its last vector, the
// k-vectorised one (rows too short for a vector) none.
Planes planes_3x3(int64_t H, int64_t W, int64_t pad, int64_t Q, int64_t C) {
  return Q >= kLanes ? row_planes(H, W, pad, Q, C) : Planes(H, W, pad, 0);
}

// 3x3 stride 1, forward or dx: y (N, K, P, Q) from the padded planes xp of C channels.
void conv_3x3(float* y, const float* xp, float* wbuf, const float* w, const float* b, int64_t wK, int64_t wC, bool flip,
              int64_t N, int64_t P, int64_t Q, const Planes& pl, bool relu) {
  const int64_t C = flip ? wK : wC, K = flip ? wC : wK;
  if (Q >= kLanes) {
    pack_weights(wbuf, w, wK, wC, kTaps, flip, kKB);
    direct_conv(y, xp, wbuf, b, N, C, K, P, Q, pl, relu);
  } else {
    pack_weights(wbuf, w, wK, wC, kTaps, flip, kLanes);
    kvec_conv(y, xp, wbuf, b, N, C, K, 3, 3, 1, P, Q, pl);
    if (relu) relu_forward(y, y, N * K * P * Q);
  }
}

// Packed weights of either kernel: O outputs, I inputs, RS taps.
int64_t packed_floats(int64_t O, int64_t I, int64_t RS) {
  return std::max(round_up(O, kKB) * I * RS, round_up(O, kLanes) * I * RS);
}

// Scratch: region A holds padded planes (x, later dy), region B the packed
// weights or dy^T + dwT.
struct Scratch {
  Planes px, pdy;  // x padded for forward / dw; dy padded for dx
  int64_t a, b;    // floats in A and B
  explicit Scratch(const ConvGeom& g)
      : px(planes_3x3(g.H, g.W, g.pad, g.Q(), g.C)), pdy(planes_3x3(g.P(), g.Q(), 2 - g.pad, g.W, g.K)) {
    const int64_t Kp = round_up(g.K, kLanes), PQ = g.P() * g.Q();
    a = std::max(g.N * g.C * px.L, g.N * g.K * pdy.L);
    b = std::max({packed_floats(g.K, g.C, kTaps), packed_floats(g.C, g.K, kTaps), g.N * PQ * Kp + g.C * kTaps * Kp});
  }
};
}  // namespace

bool conv2d_direct_applies(const ConvGeom& g) {
  return g.R == 3 && g.S == 3 && g.stride == 1 && g.pad >= 0 && g.pad <= 2 && g.P() >= 1 && g.Q() >= kLanes;
}

int64_t conv2d_direct_workspace(const ConvGeom& g) {
  const Scratch sc(g);
  return sc.a + sc.b;
}

void conv2d_direct_forward(float* y, const float* x, const float* w, const float* b, const ConvGeom& g, float* ws,
                           bool relu) {
  const Scratch sc(g);
  pad_planes(ws, x, g.N, g.C, g.H, g.W, g.pad, sc.px);
  conv_3x3(y, ws, ws + sc.a, w, b, g.K, g.C, false, g.N, g.P(), g.Q(), sc.px, relu);
}

void conv2d_direct_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                            const ConvGeom& g, float* ws) {
  const Scratch sc(g);
  const int64_t P = g.P(), Q = g.Q(), Kp = round_up(g.K, kLanes);
  float *A = ws, *B = ws + sc.a;
  if (dw) {  // A: x padded, B: dy^T | dwT
    pad_planes(A, x, g.N, g.C, g.H, g.W, g.pad, sc.px);
    transpose_dy(B, dy, g.N, g.K, P * Q, Kp);
    direct_weight_grad(dw, B + g.N * P * Q * Kp, B, A, g.N, g.C, g.K, P, Q, Kp, sc.px);
  }
  if (dx) {  // A: dy padded by 2 - pad, B: w transposed and flipped
    pad_planes(A, dy, g.N, g.K, P, Q, 2 - g.pad, sc.pdy);
    conv_3x3(dx, A, B, w, nullptr, g.K, g.C, true, g.N, g.H, g.W, sc.pdy, false);
  }
  if (db) bias_backward(db, dy, g.N, g.K, P * Q);
}

bool conv2d_pointwise_applies(const ConvGeom& g) {
  return g.pointwise() && g.H * g.W % kLanes == 0 && g.H * g.W > 0;
}

int64_t conv2d_pointwise_workspace(const ConvGeom& g) { return packed_floats(g.K, g.C, 1); }

void conv2d_pointwise_forward(float* y, const float* x, const float* w, const float* b, const ConvGeom& g, float* ws,
                              bool relu) {
  pack_weights(ws, w, g.K, g.C, 1, false, kKB);
  pointwise_conv(y, x, ws, b, g.N, g.C, g.K, g.H * g.W, relu);
}

int64_t conv2d_kvec_workspace(const ConvGeom& g) {
  const Planes pl(g.H, g.W, g.pad, 0);
  return (pl.is_identity(g.H, g.W) ? 0 : g.N * g.C * pl.L) + packed_floats(g.K, g.C, g.R * g.S);
}

void conv2d_kvec_forward(float* y, const float* x, const float* w, const float* b, const ConvGeom& g, float* ws) {
  const Planes pl(g.H, g.W, g.pad, 0);
  const float* xp = x;
  if (!pl.is_identity(g.H, g.W)) {
    pad_planes(ws, x, g.N, g.C, g.H, g.W, g.pad, pl);
    xp = ws;
    ws += g.N * g.C * pl.L;
  }
  pack_weights(ws, w, g.K, g.C, g.R * g.S, false, kLanes);
  kvec_conv(y, xp, ws, b, g.N, g.C, g.K, g.R, g.S, g.stride, g.P(), g.Q(), pl);
}

}  // namespace nimbus::cpu
