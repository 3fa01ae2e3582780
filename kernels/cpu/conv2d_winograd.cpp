// conv2d_winograd.cpp: the 3x3 stride-1 convolution by Winograd F(2x2, 3x3), forward and data
// gradient (see conv2d_winograd.h for the maths, the layout and the error bound).
//
// The data gradient of a stride-1 3x3 convolution is itself one (conv2d_direct.h): dy padded by
// 2 - pad, convolved with w transposed (k <-> c) and flipped (r, s -> 2-r, 2-s). Only the weight
// transform knows the difference.
#include "kernels/cpu/conv2d_winograd.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

#include "kernels/common/parallel.h"
#include "kernels/cpu/planes.h"
#include "kernels/cpu/simd.h"

namespace nimbus::cpu {

using simd::kLanes;
using simd::Vec16;

// File-local, in a namespace of its own: a unity build (the sanitizer build) compiles this file
// together with conv2d_direct.cpp, whose file-local names (kKB, blocks...) these repeat.
namespace {
namespace wg {
constexpr int kXi = 16;           // positions of a transformed 4x4 tile
constexpr int kKB = 8;            // product tile: output channels ...
constexpr int kV = 3;             // ... x vectors of 16 tiles (24 accumulators)
constexpr int kTileVectors = 3;   // tile vectors per job: one product tile (V then fits in L2 beside U's stream)
constexpr int kTB = kTileVectors * kLanes;  // tiles per job
constexpr int kGroup = kV * kLanes;         // tiles per product tile
static_assert(kTileVectors % kV == 0 && kV == 3);  // winograd_conv's switch covers 1-3 vectors
constexpr int64_t kMinOutputs = 32;  // output channels (conv2d_winograd.h says why)
constexpr int64_t kMinRow = 20;      // output pixels a row

int64_t blocks(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The shapes of one call: Cin input channels of H x W, pad, Cout outputs of P x Q (P = H + 2 pad - 2).
struct Wino {
  int64_t N, Cin, H, W, pad, Cout, P, Q;
  int64_t TP, TQv, nvec, njobs;  // tile rows, tile vectors per tile row, tile vectors per image, jobs per image
  Planes pl;                     // the input, padded, row h of every channel side by side (planes.h)
  int64_t KB;                    // blocks of kKB outputs
  Wino(int64_t n, int64_t cin, int64_t h, int64_t w, int64_t p, int64_t cout)
      : N(n), Cin(cin), H(h), W(w), pad(p), Cout(cout), P(h + 2 * p - 2), Q(w + 2 * p - 2),
        TP(blocks(P, 2)), TQv(blocks(blocks(Q, 2), kLanes)), nvec(TP * TQv), njobs(blocks(nvec, kTileVectors)),
        // The last tile row reads 2 rows past the output's; a tile vector 34 columns from 32 * its index.
        pl(h, w, p, 2 * kLanes * TQv + 2, cin, true, 2 * TP + 2), KB(blocks(Cout, kKB)) {}
  int64_t image_floats() const { return Cin * pl.L; }
  int64_t planes_floats() const { return N * image_floats(); }
  int64_t u_floats() const { return kXi * KB * Cin * kKB; }
  int64_t v_floats() const { return kXi * Cin * kTB; }
  int64_t m_floats() const { return kXi * kKB * kTB; }
  int64_t workspace() const { return planes_floats() + u_floats() + omp_get_max_threads() * (v_floats() + m_floats()); }
};

// U[xi][kb][c][j] = (G g G^T)[xi] for output kb*8 + j and input c (0 past the last output), in double
// and rounded once. g = w[k, c] (w: Cout x Cin x 3 x 3), or for the data gradient (flip) w[c, k]
// turned by 180 degrees (w: Cin x Cout x 3 x 3). The 8 outputs of a block side by side, so that the
// arithmetic vectorises across them.
void transform_weights(float* U, const float* w, const Wino& s, bool flip) {
#pragma omp parallel for if (s.Cout * s.Cin * 9 > kParallelGrain)
  for (int64_t kb = 0; kb < s.KB; ++kb)
    for (int64_t c = 0; c < s.Cin; ++c) {
      double g[3][3][kKB] = {};
      for (int j = 0; j < kKB; ++j) {
        const int64_t k = kb * kKB + j;
        if (k >= s.Cout) break;
        const float* wk = flip ? w + (c * s.Cout + k) * 9 : w + (k * s.Cin + c) * 9;
        for (int t = 0; t < 9; ++t) g[t / 3][t % 3][j] = wk[flip ? 8 - t : t];
      }
      double a[4][3][kKB];  // G g
      for (int q = 0; q < 3; ++q)
        for (int j = 0; j < kKB; ++j) {
          a[0][q][j] = g[0][q][j];
          a[1][q][j] = 0.5 * (g[0][q][j] + g[1][q][j] + g[2][q][j]);
          a[2][q][j] = 0.5 * (g[0][q][j] - g[1][q][j] + g[2][q][j]);
          a[3][q][j] = g[2][q][j];
        }
      for (int i = 0; i < 4; ++i) {  // (G g) G^T
        float* u = U + ((i * 4 * s.KB + kb) * s.Cin + c) * kKB;
        const int64_t step = s.KB * s.Cin * kKB;  // from position xi to xi + 1
        for (int j = 0; j < kKB; ++j) {
          u[j] = float(a[i][0][j]);
          u[step + j] = float(0.5 * (a[i][0][j] + a[i][1][j] + a[i][2][j]));
          u[2 * step + j] = float(0.5 * (a[i][0][j] - a[i][1][j] + a[i][2][j]));
          u[3 * step + j] = float(a[i][2][j]);
        }
      }
    }
}

// The even and the odd lanes of the 32 floats a ++ b; a and b interleaved, lanes 0-15 (lo) and 16-31
// (hi) of a0 b0 a1 b1 ...
NIMBUS_SIMD_INLINE Vec16 even(Vec16 a, Vec16 b) {
  return simd::pick<0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30>(a, b);
}
NIMBUS_SIMD_INLINE Vec16 odd(Vec16 a, Vec16 b) {
  return simd::pick<1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31>(a, b);
}
NIMBUS_SIMD_INLINE Vec16 interleave_lo(Vec16 a, Vec16 b) {
  return simd::pick<0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23>(a, b);
}
NIMBUS_SIMD_INLINE Vec16 interleave_hi(Vec16 a, Vec16 b) {
  return simd::pick<8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31>(a, b);
}

// V holds, for each position xi and each group of kV tile vectors of the job, the group's 48 tiles of
// every input channel side by side: a product tile reads one contiguous block (Cin x 48 floats).
NIMBUS_SIMD_INLINE float* v_at(float* V, int xi, int v, int64_t c, const Wino& s) {
  return V + ((xi * (kTileVectors / kV) + v / kV) * s.Cin + c) * kGroup + v % kV * kLanes;
}
NIMBUS_SIMD_INLINE const float* v_at(const float* V, int xi, int v, int64_t c, const Wino& s) {
  return v_at(const_cast<float*>(V), xi, v, c, s);
}

// V[xi][c][tile] = B^T d B for the 16 tiles of tile vector `vec` of one image (planes xp),
// its v-th in the job, every input channel c.
void transform_inputs(float* V, const float* xp, int64_t vec, int v, const Wino& s) {
  const int64_t tp = vec / s.TQv, col0 = 2 * kLanes * (vec % s.TQv);
  const float* base = xp + 2 * tp * s.pl.rs + col0;
  for (int64_t c = 0; c < s.Cin; ++c) {
    Vec16 t[4][4];  // B^T d: t[i][j] over the tiles
    Vec16 d[4][4];  // d[r][j]: row r, column j of each tile's 4x4 input
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      const float* p = base + r * s.pl.rs + c * s.pl.cs;
      const Vec16 a0 = simd::load(p), a1 = simd::load(p + kLanes), b0 = simd::load(p + 2), b1 = simd::load(p + 2 + kLanes);
      d[r][0] = even(a0, a1);
      d[r][1] = odd(a0, a1);
      d[r][2] = even(b0, b1);
      d[r][3] = odd(b0, b1);
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {  // t = B^T d, a column at a time
      t[0][j] = d[0][j] - d[2][j];
      t[1][j] = d[1][j] + d[2][j];
      t[2][j] = d[2][j] - d[1][j];
      t[3][j] = d[1][j] - d[3][j];
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {  // V = t B, a row at a time
      const Vec16 out[4] = {t[i][0] - t[i][2], t[i][1] + t[i][2], t[i][2] - t[i][1], t[i][1] - t[i][3]};
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) simd::store(v_at(V, i * 4 + j, v, c, s), out[j]);
    }
  }
}

// M[xi][j][16 v ...] = sum_c U[xi][kb][c][j] V[xi][c][16 v ...] for NV tile vectors from v0.
template <int NV>
void product_tile(float* M, const float* U, const float* V, int64_t kb, int xi, int v0, const Wino& s) {
  Vec16 acc[kKB][NV];
#pragma GCC unroll 16
  for (int i = 0; i < kKB; ++i)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[i][v] = Vec16{};
  const float* u = U + (xi * s.KB + kb) * s.Cin * kKB;
  const float* vc = v_at(V, xi, v0, 0, s);
  for (int64_t c = 0; c < s.Cin; ++c, u += kKB, vc += kGroup) {
    Vec16 xv[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) xv[v] = simd::load(vc + v * kLanes);
#pragma GCC unroll 16
    for (int i = 0; i < kKB; ++i) {
      const Vec16 ui = simd::splat(u[i]);
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[i][v] += ui * xv[v];
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < kKB; ++i)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) simd::store(M + (xi * kKB + i) * kTB + (v0 + v) * kLanes, acc[i][v]);
}

// y[k] for k = kb*8 .. (at most Cout) over the job's nv tile vectors from `first`: A^T M A, + bias, ReLU,
// stored as 2 rows of 32 interleaved outputs per tile vector (fewer at the image's right and bottom edge).
void transform_outputs(float* y, const float* M, const float* b, int64_t kb, int64_t first, int nv, bool relu,
                       const Wino& s) {
  const int64_t PQ = s.P * s.Q;
  for (int i = 0; i < kKB && kb * kKB + i < s.Cout; ++i) {
    const int64_t k = kb * kKB + i;
    const Vec16 bias = simd::splat(b ? b[k] : 0.f);
    for (int v = 0; v < nv; ++v) {
      Vec16 m[kXi];
#pragma GCC unroll 16
      for (int xi = 0; xi < kXi; ++xi) m[xi] = simd::load(M + (xi * kKB + i) * kTB + v * kLanes);
      Vec16 r[2][4];
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {  // r = A^T m, a column at a time
        r[0][j] = m[j] + m[4 + j] + m[8 + j];
        r[1][j] = m[4 + j] - m[8 + j] - m[12 + j];
      }
      const int64_t vec = first + v, tp = vec / s.TQv, q0 = 2 * kLanes * (vec % s.TQv);
      const int64_t nq = std::min<int64_t>(2 * kLanes, s.Q - q0);
#pragma GCC unroll 2
      for (int a = 0; a < 2; ++a) {
        const int64_t p = 2 * tp + a;
        if (p >= s.P) break;
        Vec16 y0 = r[a][0] + r[a][1] + r[a][2] + bias, y1 = r[a][1] - r[a][2] - r[a][3] + bias;
        if (relu) {  // relu_forward's rule: a NaN passes through
          y0 = y0 < 0.f ? Vec16{} : y0;
          y1 = y1 < 0.f ? Vec16{} : y1;
        }
        float* dst = y + k * PQ + p * s.Q + q0;
        const Vec16 lo = interleave_lo(y0, y1), hi = interleave_hi(y0, y1);
        if (nq >= 2 * kLanes) {
          simd::store(dst, lo);
          simd::store(dst + kLanes, hi);
        } else if (nq > kLanes) {
          simd::store(dst, lo);
          simd::store_first(dst + kLanes, hi, int(nq - kLanes));
        } else {
          simd::store_first(dst, lo, int(nq));
        }
      }
    }
  }
}

// y (N, Cout, P, Q) = b + the 3x3 convolution of x (N, Cin, H, W) padded by s.pad with w (flip: see
// transform_weights); ws: s.workspace() floats.
void winograd_conv(float* y, const float* x, const float* w, const float* b, const Wino& s, bool flip, bool relu,
                   float* ws) {
  float* planes = ws;
  float* U = planes + s.planes_floats();
  float* scratch = U + s.u_floats();
  pad_planes(planes, x, s.N, s.Cin, s.H, s.W, s.pad, s.pl);
  transform_weights(U, w, s, flip);
#pragma omp parallel
  {
    float* V = scratch + omp_get_thread_num() * (s.v_floats() + s.m_floats());
    float* M = V + s.v_floats();
#pragma omp for collapse(2) schedule(static)
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t job = 0; job < s.njobs; ++job) {
        const int64_t first = job * kTileVectors;
        const int nv = int(std::min<int64_t>(kTileVectors, s.nvec - first));
        const float* xp = planes + n * s.image_floats();
        for (int v = 0; v < nv; ++v) transform_inputs(V, xp, first + v, v, s);
        for (int64_t kb = 0; kb < s.KB; ++kb) {
          for (int xi = 0; xi < kXi; ++xi)
            for (int v0 = 0; v0 < nv; v0 += kV) {
              switch (std::min(kV, nv - v0)) {
                case 3: product_tile<3>(M, U, V, kb, xi, v0, s); break;
                case 2: product_tile<2>(M, U, V, kb, xi, v0, s); break;
                default: product_tile<1>(M, U, V, kb, xi, v0, s); break;
              }
            }
          transform_outputs(y + n * s.Cout * s.P * s.Q, M, b, kb, first, nv, relu, s);
        }
      }
  }
}

Wino forward_shape(const ConvGeom& g) { return Wino(g.N, g.C, g.H, g.W, g.pad, g.K); }
Wino data_grad_shape(const ConvGeom& g) { return Wino(g.N, g.K, g.P(), g.Q(), 2 - g.pad, g.C); }

// Atomic: a test may switch it while nothing runs; reading it costs nothing beside a convolution.
std::atomic<bool>& winograd_switch() {
  static std::atomic<bool> on = [] {
    const char* e = std::getenv("NIMBUS_CPU_WINOGRAD");
    return !(e && std::string(e) == "0");
  }();
  return on;
}
bool fits(const ConvGeom& g, int64_t outputs, int64_t row) {
  return winograd_switch() && g.R == 3 && g.S == 3 && g.stride == 1 && g.pad >= 0 && g.pad <= 2 && g.P() >= 1 &&
         g.Q() >= 1 && outputs >= kMinOutputs && row >= kMinRow;
}
}  // namespace wg
}  // namespace

bool winograd_enabled() { return wg::winograd_switch(); }
void set_winograd_enabled(bool on) { wg::winograd_switch().store(on); }
bool conv2d_winograd_applies(const ConvGeom& g) { return wg::fits(g, g.K, g.Q()); }
bool conv2d_winograd_applies_data_grad(const ConvGeom& g) { return wg::fits(g, g.C, g.W); }

int64_t conv2d_winograd_workspace(const ConvGeom& g) {
  return std::max(wg::forward_shape(g).workspace(), wg::data_grad_shape(g).workspace());
}

void conv2d_winograd_forward(float* y, const float* x, const float* w, const float* b, const ConvGeom& g, float* ws,
                             bool relu) {
  wg::winograd_conv(y, x, w, b, wg::forward_shape(g), false, relu, ws);
}

void conv2d_winograd_backward_data(float* dx, const float* dy, const float* w, const ConvGeom& g, float* ws) {
  wg::winograd_conv(dx, dy, w, nullptr, wg::data_grad_shape(g), true, false, ws);
}

}  // namespace nimbus::cpu
