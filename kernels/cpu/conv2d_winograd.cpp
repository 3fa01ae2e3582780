// conv2d_winograd.cpp: the 3x3 stride-1 convolution by Winograd F(2x2, 3x3), forward and data
// gradient, and its weight gradient by F(3x3, 2x2) (see conv2d_winograd.h for the maths, the layout
// and the error bound).
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
constexpr int64_t kMinDwChannels = 128;  // input and output channels, for the weight gradient (conv2d_winograd.h)

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

// out[xi] = (B^T d B)[xi] for 16 horizontally adjacent tiles of one channel, d read from row-interleaved
// padded planes at `base` (the tiles' top-left input), rows rs floats apart.
NIMBUS_SIMD_INLINE void tile_inputs(Vec16 out[kXi], const float* base, int64_t rs) {
  Vec16 t[4][4];  // B^T d: t[i][j] over the tiles
  Vec16 d[4][4];  // d[r][j]: row r, column j of each tile's 4x4 input
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r) {
    const float* p = base + r * rs;
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
    out[i * 4 + 0] = t[i][0] - t[i][2];
    out[i * 4 + 1] = t[i][1] + t[i][2];
    out[i * 4 + 2] = t[i][2] - t[i][1];
    out[i * 4 + 3] = t[i][1] - t[i][3];
  }
}

// The top-left input of tile vector `vec` of one image's planes xp (channel 0).
const float* tile_vector_base(const float* xp, int64_t vec, const Wino& s) {
  return xp + 2 * (vec / s.TQv) * s.pl.rs + 2 * kLanes * (vec % s.TQv);
}

// V[xi][c][tile] = B^T d B for the 16 tiles of tile vector `vec` of one image (planes xp),
// its v-th in the job, every input channel c.
void transform_inputs(float* V, const float* xp, int64_t vec, int v, const Wino& s) {
  const float* base = tile_vector_base(xp, vec, s);
  for (int64_t c = 0; c < s.Cin; ++c) {
    Vec16 out[kXi];
    tile_inputs(out, base + c * s.pl.cs, s.pl.rs);
#pragma GCC unroll 16
    for (int xi = 0; xi < kXi; ++xi) simd::store(v_at(V, xi, v, c, s), out[xi]);
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

// ---------------------------------------------------------------------------------------------
// The weight gradient, F(3x3, 2x2): for each 2x2 tile t of dy and the 4x4 input tile d_t under it,
//   dW[k, c] (3x3) += G^T [ (A dy_t[k] A^T) .* (B^T d_t[c] B) ] G
// with the forward's A, B and G (conv2d_winograd.h). The sum over tiles moves inside, as the sum over c
// does in the forward: Mw[xi][k][c] = sum_t Y[xi][k][t] X[xi][t][c], 16 (K x T) x (T x C) products, then
// one output transform per (k, c). Tiles run in chunks of tile vectors (over images and tile rows, in
// order; as many as keep X and Y near kChunkBytes, at most 64): transform the chunk's inputs (X, channels
// side by side, transposed from the tile-major transform) and gradients (Y), then add the chunk's 16
// products to Mw, each element of Mw owned by one product tile: the same bits for any thread count.
// (docs/perf-notes.md has the layouts, loop orders and chunk sizes tried.)
constexpr int64_t kChunkBytes = 8 << 20;  // X and Y of a chunk: 16 tile vectors at 256 channels and 256 outputs

struct WinoDw {
  Wino s;             // the forward's tiling of the output (dy) and planes of the input (x)
  int64_t Cp, Kp;     // channels rounded up to 16, outputs to kKB
  int64_t vectors;    // tile vectors of all images
  int64_t chunk;      // tile vectors a chunk
  int64_t Tc;         // tiles a chunk
  explicit WinoDw(const ConvGeom& g)
      : s(g.N, g.C, g.H, g.W, g.pad, g.K),
        Cp(blocks(g.C, kLanes) * kLanes), Kp(s.KB * kKB), vectors(g.N * s.nvec),
        chunk(std::clamp<int64_t>(kChunkBytes / (kXi * (Cp + Kp) * kLanes * int64_t(sizeof(float))), 1, 64)),
        Tc(chunk * kLanes), cv(Cp / kLanes), n3(cv % kV == 1 && cv > 1 ? cv / kV - 1 : cv / kV) {}
  // The product tiles' blocks of channel vectors: 3 vectors each, then 2 + 2 where one would be left
  // over (a 1-vector tile does 8 multiply-adds per load of x, a 2-vector one 16), or the 1 or 2 left.
  int64_t cv;  // vectors of 16 channels
  int64_t n3;  // blocks of 3 vectors, first
  int64_t cblocks() const { return n3 + blocks(cv - kV * n3, 2); }
  int64_t block_of(int64_t vec) const { return vec < kV * n3 ? vec / kV : n3 + (vec - kV * n3) / 2; }
  int64_t block_start(int64_t cb) const { return cb < n3 ? kV * cb : kV * n3 + 2 * (cb - n3); }  // in vectors
  int64_t block_vectors(int64_t cb) const { return std::min<int64_t>(cb < n3 ? kV : 2, cv - block_start(cb)); }
  int64_t x_floats() const { return kXi * Tc * Cp; }  // X[xi][block of channels][t][channel in it]
  int64_t y_floats() const { return kXi * Kp * Tc; }  // Y[xi][k][t]
  int64_t m_floats() const { return kXi * Kp * Cp; }  // Mw[xi][k][c]
  int64_t workspace() const { return s.planes_floats() + x_floats() + y_floats() + m_floats(); }
};

// X holds, for each position xi and each block of channels (WinoDw::block_*), the chunk's tiles one
// after another, the block's channels side by side: a product tile reads one contiguous block (T x 48
// floats; rows of all Cp channels would be 1 KiB apart, and such rows share a few L1 sets).
// Where in X tile t's row of the block that holds channel c (a multiple of 16) starts, and the row's length.
NIMBUS_SIMD_INLINE int64_t x_offset(int xi, int64_t t, int64_t c, const WinoDw& d, int64_t* width = nullptr) {
  const int64_t cb = d.block_of(c / kLanes), c0 = d.block_start(cb) * kLanes, w = d.block_vectors(cb) * kLanes;
  if (width) *width = w;
  return (xi * d.Cp + c0) * d.Tc + t * w + (c - c0);
}

// X[xi][t][c] for the 16 tiles of the chunk's tile vector tv (tile vector `vec` of image n) and the 16
// channels from c0 (0 past the last): transformed tile-major, then transposed to channels side by side.
void dw_transform_inputs(float* X, const float* planes, int64_t n, int64_t vec, int64_t tv, int64_t c0,
                         const WinoDw& d) {
  const Wino& s = d.s;
  const float* base = tile_vector_base(planes + n * s.image_floats(), vec, s);
  Vec16 out[kLanes][kXi];  // [channel][xi], lanes over tiles
  for (int j = 0; j < kLanes; ++j) {
    if (c0 + j < s.Cin) {
      tile_inputs(out[j], base + (c0 + j) * s.pl.cs, s.pl.rs);
    } else {
      for (Vec16& o : out[j]) o = Vec16{};
    }
  }
  for (int xi = 0; xi < kXi; ++xi) {
    Vec16 col[kLanes];
#pragma GCC unroll 16
    for (int j = 0; j < kLanes; ++j) col[j] = out[j][xi];
    simd::transpose16(col);  // col[tile], lanes over the 16 channels
    int64_t width = 0;
    float* dst = X + x_offset(xi, tv * kLanes, c0, d, &width);
#pragma GCC unroll 16
    for (int t = 0; t < kLanes; ++t) simd::store(dst + t * width, col[t]);
  }
}

// Y[xi][k][tv*16 ...] = (A dy_t A^T)[xi] for the 16 tiles of the chunk's tile vector tv (tile vector `vec`
// of image n), output k (0 past the last output, and for tiles or tile rows past dy's edge).
void dw_transform_grads(float* Y, const float* dy, int64_t n, int64_t vec, int64_t tv, int64_t k, const WinoDw& d) {
  const Wino& s = d.s;
  Vec16 e[2], o[2];  // rows 2 tp + a of the tiles: their even (left) and odd (right) columns
  const int64_t tp = vec / s.TQv, q0 = 2 * kLanes * (vec % s.TQv), nq = std::min<int64_t>(2 * kLanes, s.Q - q0);
  for (int a = 0; a < 2; ++a) {
    const int64_t p = 2 * tp + a;
    if (k >= s.Cout || p >= s.P) {
      e[a] = o[a] = Vec16{};
      continue;
    }
    const float* src = dy + ((n * s.Cout + k) * s.P + p) * s.Q + q0;
    Vec16 lo, hi;
    if (nq == 2 * kLanes) {
      lo = simd::load(src);
      hi = simd::load(src + kLanes);
    } else {  // the row's last tile vector: zeros past Q
      alignas(64) float row[2 * kLanes] = {};
      for (int64_t j = 0; j < nq; ++j) row[j] = src[j];
      lo = simd::load(row);
      hi = simd::load(row + kLanes);
    }
    e[a] = even(lo, hi);
    o[a] = odd(lo, hi);
  }
  // A dy (4 x 2): rows dy0, dy0 + dy1, dy0 - dy1, -dy1; then (A dy) A^T the same along the columns.
  const Vec16 r[4][2] = {{e[0], o[0]}, {e[0] + e[1], o[0] + o[1]}, {e[0] - e[1], o[0] - o[1]}, {-e[1], -o[1]}};
  float* dst = Y + k * d.Tc + tv * kLanes;
  const int64_t step = d.Kp * d.Tc;  // from position xi to xi + 1
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    simd::store(dst + (4 * i + 0) * step, r[i][0]);
    simd::store(dst + (4 * i + 1) * step, r[i][0] + r[i][1]);
    simd::store(dst + (4 * i + 2) * step, r[i][0] - r[i][1]);
    simd::store(dst + (4 * i + 3) * step, -r[i][1]);
  }
}

// Mw[xi][kb*8 + i][c0 + 16 v ...] (+)= sum over the chunk's T tiles of Y[xi][kb*8 + i][t] X[xi][t][c0 + 16 v ...]:
// 8 outputs x NV vectors of 16 channels, as the forward's product tile; first: store, not add.
template <int NV>
void dw_product_tile(float* Mw, const float* Y, const float* X, int xi, int64_t kb, int64_t c0, int64_t T, bool first,
                     const WinoDw& d) {
  Vec16 acc[kKB][NV];
#pragma GCC unroll 16
  for (int i = 0; i < kKB; ++i)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[i][v] = Vec16{};
  const float* y = Y + (xi * d.Kp + kb * kKB) * d.Tc;
  const float* x = X + x_offset(xi, 0, c0, d);
  for (int64_t t = 0; t < T; ++t, x += NV * kLanes) {
    Vec16 xv[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) xv[v] = simd::load(x + v * kLanes);
#pragma GCC unroll 16
    for (int i = 0; i < kKB; ++i) {
      const Vec16 yi = simd::splat(y[i * d.Tc + t]);
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[i][v] += yi * xv[v];
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < kKB; ++i)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      float* m = Mw + (xi * d.Kp + kb * kKB + i) * d.Cp + c0 + v * kLanes;
      simd::store(m, first ? acc[i][v] : simd::load(m) + acc[i][v]);
    }
}

// dw[k, c] (3x3) = G^T Mw[.][k][c] G for the 16 channels from c0 (fewer at the end), G^T = rows
// (1, 1/2, 1/2, 0), (0, 1/2, -1/2, 0), (0, 1/2, 1/2, 1).
void dw_transform_outputs(float* dw, const float* Mw, int64_t k, int64_t c0, const WinoDw& d) {
  Vec16 m[kXi];
#pragma GCC unroll 16
  for (int xi = 0; xi < kXi; ++xi) m[xi] = simd::load(Mw + (xi * d.Kp + k) * d.Cp + c0);
  Vec16 h[3][4];  // G^T m, a column at a time
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const Vec16 sum = 0.5f * (m[4 + j] + m[8 + j]), diff = 0.5f * (m[4 + j] - m[8 + j]);
    h[0][j] = m[j] + sum;
    h[1][j] = diff;
    h[2][j] = sum + m[12 + j];
  }
  alignas(64) float out[9][kLanes];  // (G^T m) G: tap (r, s), lanes over channels
#pragma GCC unroll 3
  for (int r = 0; r < 3; ++r) {
    const Vec16 sum = 0.5f * (h[r][1] + h[r][2]), diff = 0.5f * (h[r][1] - h[r][2]);
    simd::store(out[r * 3 + 0], h[r][0] + sum);
    simd::store(out[r * 3 + 1], diff);
    simd::store(out[r * 3 + 2], sum + h[r][3]);
  }
  const int64_t nc = std::min<int64_t>(kLanes, d.s.Cin - c0);
  for (int64_t j = 0; j < nc; ++j)
    for (int tap = 0; tap < 9; ++tap) dw[(k * d.s.Cin + c0 + j) * 9 + tap] = out[tap][j];
}

// dw (K, C, 3, 3) = the weight gradient of the 3x3 stride-1 convolution of x (N, C, H, W) padded by pad,
// given dy (N, K, P, Q); ws: WinoDw::workspace() floats.
void winograd_weight_grad(float* dw, const float* dy, const float* x, const WinoDw& d, float* ws) {
  const Wino& s = d.s;
  float* planes = ws;
  float* X = planes + s.planes_floats();
  float* Y = X + d.x_floats();
  float* Mw = Y + d.y_floats();
  pad_planes(planes, x, s.N, s.Cin, s.H, s.W, s.pad, s.pl);
  const int64_t CG = d.cv, CB = d.cblocks();
#pragma omp parallel
  for (int64_t first = 0; first < d.vectors; first += d.chunk) {
    const int64_t nv = std::min<int64_t>(d.chunk, d.vectors - first);
#pragma omp for collapse(2) schedule(static) nowait
    for (int64_t tv = 0; tv < nv; ++tv)
      for (int64_t cg = 0; cg < CG; ++cg)
        dw_transform_inputs(X, planes, (first + tv) / s.nvec, (first + tv) % s.nvec, tv, cg * kLanes, d);
#pragma omp for collapse(2) schedule(static)
    for (int64_t k = 0; k < d.Kp; ++k)
      for (int64_t tv = 0; tv < nv; ++tv)  // innermost: Y's rows are written in order
        dw_transform_grads(Y, dy, (first + tv) / s.nvec, (first + tv) % s.nvec, tv, k, d);
    // (the barrier: X and Y complete)
#pragma omp for collapse(3) schedule(static)
    for (int xi = 0; xi < kXi; ++xi)
      for (int64_t cb = 0; cb < CB; ++cb)
        for (int64_t kb = 0; kb < s.KB; ++kb) {  // innermost: the tile's X block stays in L1
          const int64_t c0 = d.block_start(cb) * kLanes;
          switch (d.block_vectors(cb)) {
            case 3: dw_product_tile<3>(Mw, Y, X, xi, kb, c0, nv * kLanes, first == 0, d); break;
            case 2: dw_product_tile<2>(Mw, Y, X, xi, kb, c0, nv * kLanes, first == 0, d); break;
            default: dw_product_tile<1>(Mw, Y, X, xi, kb, c0, nv * kLanes, first == 0, d); break;
          }
        }
    // (the barrier: the next chunk overwrites X and Y)
  }
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t k = 0; k < s.Cout; ++k)
    for (int64_t cg = 0; cg < CG; ++cg) dw_transform_outputs(dw, Mw, k, cg * kLanes, d);
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
bool conv2d_winograd_applies_weight_grad(const ConvGeom& g) {
  return wg::fits(g, g.K, g.Q()) && std::min(g.C, g.K) >= wg::kMinDwChannels;
}

int64_t conv2d_winograd_workspace(const ConvGeom& g) {
  return std::max({wg::forward_shape(g).workspace(), wg::data_grad_shape(g).workspace(), wg::WinoDw(g).workspace()});
}

void conv2d_winograd_forward(float* y, const float* x, const float* w, const float* b, const ConvGeom& g, float* ws,
                             bool relu) {
  wg::winograd_conv(y, x, w, b, wg::forward_shape(g), false, relu, ws);
}

void conv2d_winograd_backward_data(float* dx, const float* dy, const float* w, const ConvGeom& g, float* ws) {
  wg::winograd_conv(dx, dy, w, nullptr, wg::data_grad_shape(g), true, false, ws);
}

void conv2d_winograd_backward_weight(float* dw, const float* dy, const float* x, const ConvGeom& g, float* ws) {
  if (g.N == 0 || g.P() <= 0 || g.Q() <= 0) {
    std::fill(dw, dw + g.K * g.C * 9, 0.f);
    return;
  }
  wg::winograd_weight_grad(dw, dy, x, wg::WinoDw(g), ws);
}

}  // namespace nimbus::cpu
