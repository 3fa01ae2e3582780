// learn_conv.cpp: the numbers of docs/learn/02-convolution.md. One tiny convolution computed
// three ways (the direct formula, an explicit im2col matrix times the weights, nimbus' conv2d op),
// its two gradients four or five ways each (nimbus' backward, the formulas, the transposed
// convolution, the GEMMs, finite differences), the planted mistake of an unflipped kernel, the
// direct 3x3 CPU path at every padding it takes, what im2col would cost on real ResNet-50 and
// DSen2-CR layers (weight shapes, strides and pads read from the models), and the H200 timings of
// the numbered CUDA versions read from bench/results/h200/2026-12-04.jsonl (the rows
// docs/gpu-results.md explains).
// docs/learn/build.py pastes this output into the page; ctest checks the page still matches.
//
// Inputs are small integers and gradients of L = sum(dy * y) with integer dy, so every sum below is
// exact in float: the output does not depend on the order a machine adds in or on its threads.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/io/json.h"
#include "engine/ops/conv.h"
#include "engine/tensor.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cuda/conv2d.h"  // kConvWorkspaceFloats (a constant: nothing of CUDA is linked)
#include "models/dsen2cr.h"
#include "models/resnet.h"

using namespace nimbus;
using cpu::ConvGeom;

namespace {

using Vec = std::vector<double>;

// ---- printing: grids side by side --------------------------------------------------------------
struct Grid {
  std::string title;
  Vec v;
  int64_t rows, cols;
};

void show(const std::vector<Grid>& gs) {
  std::vector<int> width;
  int64_t rows = 0;
  for (const Grid& g : gs) {
    width.push_back(std::max(int(g.title.size()), int(g.cols) * 4));
    rows = std::max(rows, g.rows);
  }
  std::string line = " ";
  for (size_t i = 0; i < gs.size(); ++i)
    line += " " + gs[i].title + std::string(size_t(width[i]) - gs[i].title.size() + 2, ' ');
  while (line.back() == ' ') line.pop_back();
  std::printf("%s\n", line.c_str());
  for (int64_t r = 0; r < rows; ++r) {
    line = " ";
    for (size_t i = 0; i < gs.size(); ++i) {
      std::string cell;
      for (int64_t c = 0; c < gs[i].cols; ++c) {
        char b[32];
        if (r < gs[i].rows)  // + 0.0 turns -0 into 0
          std::snprintf(b, sizeof b, "%4g", gs[i].v[size_t(r * gs[i].cols + c)] + 0.0);
        else std::snprintf(b, sizeof b, "    ");
        cell += b;
      }
      line += " " + cell + std::string(size_t(width[i]) - cell.size() + 2, ' ');
    }
    while (line.back() == ' ') line.pop_back();
    std::printf("%s\n", line.c_str());
  }
}

const char* yes(bool b) { return b ? "yes" : "NO"; }
Vec d(const std::vector<float>& v) { return {v.begin(), v.end()}; }
std::vector<float> f(const Vec& v) { return {v.begin(), v.end()}; }
double max_diff(const Vec& a, const Vec& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// ---- the formulas, written out once more here, in double -----------------------------------------
// y[n,k,p,q] = sum_{c,r,s} w[k,c,r,s] x[n, c, p*stride - pad + r, q*stride - pad + s]  (0 outside x)
Vec conv_direct(const Vec& x, const Vec& w, const ConvGeom& g) {
  const int64_t P = g.P(), Q = g.Q();
  Vec y(size_t(g.N * g.K * P * Q), 0.0);
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t k = 0; k < g.K; ++k)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q)
          for (int64_t c = 0; c < g.C; ++c)
            for (int64_t r = 0; r < g.R; ++r)
              for (int64_t s = 0; s < g.S; ++s) {
                const int64_t h = p * g.stride - g.pad + r, wc = q * g.stride - g.pad + s;
                if (h < 0 || h >= g.H || wc < 0 || wc >= g.W) continue;
                y[size_t(((n * g.K + k) * P + p) * Q + q)] +=
                    w[size_t(((k * g.C + c) * g.R + r) * g.S + s)] * x[size_t(((n * g.C + c) * g.H + h) * g.W + wc)];
              }
  return y;
}

// dx: every output (n,k,p,q) sends dy * w back to each input it read (the forward's loops, reversed).
Vec dx_scatter(const Vec& dy, const Vec& w, const ConvGeom& g) {
  const int64_t P = g.P(), Q = g.Q();
  Vec dx(size_t(g.N * g.C * g.H * g.W), 0.0);
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t k = 0; k < g.K; ++k)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q)
          for (int64_t c = 0; c < g.C; ++c)
            for (int64_t r = 0; r < g.R; ++r)
              for (int64_t s = 0; s < g.S; ++s) {
                const int64_t h = p * g.stride - g.pad + r, wc = q * g.stride - g.pad + s;
                if (h < 0 || h >= g.H || wc < 0 || wc >= g.W) continue;
                dx[size_t(((n * g.C + c) * g.H + h) * g.W + wc)] +=
                    dy[size_t(((n * g.K + k) * P + p) * Q + q)] * w[size_t(((k * g.C + c) * g.R + r) * g.S + s)];
              }
  return dx;
}

// dw[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] x[n, c, p*stride - pad + r, q*stride - pad + s]
Vec dw_formula(const Vec& dy, const Vec& x, const ConvGeom& g) {
  const int64_t P = g.P(), Q = g.Q();
  Vec dw(size_t(g.K * g.C * g.R * g.S), 0.0);
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t k = 0; k < g.K; ++k)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q)
          for (int64_t c = 0; c < g.C; ++c)
            for (int64_t r = 0; r < g.R; ++r)
              for (int64_t s = 0; s < g.S; ++s) {
                const int64_t h = p * g.stride - g.pad + r, wc = q * g.stride - g.pad + s;
                if (h < 0 || h >= g.H || wc < 0 || wc >= g.W) continue;
                dw[size_t(((k * g.C + c) * g.R + r) * g.S + s)] +=
                    dy[size_t(((n * g.K + k) * P + p) * Q + q)] * x[size_t(((n * g.C + c) * g.H + h) * g.W + wc)];
              }
  return dw;
}

// im2col of one image: col (C*R*S, P*Q), row (c,r,s), column (p,q) = x[c, p*stride - pad + r, q*stride - pad + s].
Vec im2col(const Vec& x, const ConvGeom& g) {
  const int64_t P = g.P(), Q = g.Q();
  Vec col(size_t(g.C * g.R * g.S * P * Q), 0.0);
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t r = 0; r < g.R; ++r)
      for (int64_t s = 0; s < g.S; ++s)
        for (int64_t p = 0; p < P; ++p)
          for (int64_t q = 0; q < Q; ++q) {
            const int64_t h = p * g.stride - g.pad + r, wc = q * g.stride - g.pad + s;
            if (h >= 0 && h < g.H && wc >= 0 && wc < g.W)
              col[size_t((((c * g.R + r) * g.S + s) * P + p) * Q + q)] = x[size_t((c * g.H + h) * g.W + wc)];
          }
  return col;
}

// C (M, N) = op(A) op(B), plain loops: A is (M, K) or, transposed, (K, M); B likewise (K, N) or (N, K).
Vec matmul(const Vec& A, bool ta, const Vec& B, bool tb, int64_t M, int64_t N, int64_t K) {
  Vec C(size_t(M * N), 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k)
        C[size_t(m * N + n)] += A[size_t(ta ? k * M + m : m * K + k)] * B[size_t(tb ? n * K + k : k * N + n)];
  return C;
}

// w (K, C, R, S) -> the transposed convolution's weight (C, K, R, S), each kernel turned by 180 degrees
// (flip = true) or, the planted mistake, not.
Vec transpose_flip(const Vec& w, const ConvGeom& g, bool flip) {
  Vec out(w.size());
  for (int64_t k = 0; k < g.K; ++k)
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t r = 0; r < g.R; ++r)
        for (int64_t s = 0; s < g.S; ++s) {
          const int64_t rr = flip ? g.R - 1 - r : r, ss = flip ? g.S - 1 - s : s;
          out[size_t(((c * g.K + k) * g.R + r) * g.S + s)] = w[size_t(((k * g.C + c) * g.R + rr) * g.S + ss)];
        }
  return out;
}

// dy (N, K, P, Q) with stride - 1 zeros between neighbours: ((P-1)*stride + 1, (Q-1)*stride + 1).
Vec dilate(const Vec& dy, const ConvGeom& g) {
  const int64_t P = g.P(), Q = g.Q(), Pd = (P - 1) * g.stride + 1, Qd = (Q - 1) * g.stride + 1;
  Vec out(size_t(g.N * g.K * Pd * Qd), 0.0);
  for (int64_t nk = 0; nk < g.N * g.K; ++nk)
    for (int64_t p = 0; p < P; ++p)
      for (int64_t q = 0; q < Q; ++q)
        out[size_t((nk * Pd + p * g.stride) * Qd + q * g.stride)] = dy[size_t((nk * P + p) * Q + q)];
  return out;
}

// dx as a convolution computed by nimbus' own forward op: dy dilated by the stride, padded by
// R - 1 - pad, correlated with the transposed (and flipped, unless flip is false) weights.
Vec dx_transposed_conv(const Vec& dy, const Vec& w, const ConvGeom& g, bool flip) {
  NoGradGuard ng;
  const Vec dyd = dilate(dy, g);
  const int64_t Pd = (g.P() - 1) * g.stride + 1, Qd = (g.Q() - 1) * g.stride + 1;
  Tensor t = Tensor::from_vector({g.N, g.K, Pd, Qd}, f(dyd));
  Tensor wt = Tensor::from_vector({g.C, g.K, g.R, g.S}, f(transpose_flip(w, g, flip)));
  return d(conv2d(t, wt, Tensor(), 1, int(g.R - 1 - g.pad)).to_vector());
}

// The gradients nimbus' conv2d op computes for L = sum(dy * y).
struct Grads {
  Vec y, dx, dw;
};
Grads nimbus_conv(const Vec& x, const Vec& w, const Vec& dy, const ConvGeom& g) {
  Tensor X = Tensor::from_vector({g.N, g.C, g.H, g.W}, f(x)).set_requires_grad(true);
  Tensor W = Tensor::from_vector({g.K, g.C, g.R, g.S}, f(w)).set_requires_grad(true);
  Tensor Y = conv2d(X, W, Tensor(), int(g.stride), int(g.pad));
  Y.backward(Tensor::from_vector(Y.shape(), f(dy)));
  return {d(Y.to_vector()), d(X.grad().to_vector()), d(W.grad().to_vector())};
}

// Central differences of L = sum(dy * conv2d(x, w)) through nimbus' forward. L is linear in x and in w,
// so with integer inputs and a step of 1/2 every difference is exact.
Vec finite_differences(const Vec& x, const Vec& w, const Vec& dy, const ConvGeom& g, bool wrt_x) {
  NoGradGuard ng;
  auto loss = [&](const Vec& xs, const Vec& ws) {
    const std::vector<float> y =
        conv2d(Tensor::from_vector({g.N, g.C, g.H, g.W}, f(xs)), Tensor::from_vector({g.K, g.C, g.R, g.S}, f(ws)),
               Tensor(), int(g.stride), int(g.pad))
            .to_vector();
    double l = 0;
    for (size_t i = 0; i < y.size(); ++i) l += dy[i] * y[i];
    return l;
  };
  const double e = 0.5;
  Vec v = wrt_x ? x : w, out;
  for (size_t i = 0; i < v.size(); ++i) {
    const double keep = v[i];
    v[i] = keep + e;
    const double up = wrt_x ? loss(v, w) : loss(x, v);
    v[i] = keep - e;
    const double down = wrt_x ? loss(v, w) : loss(x, v);
    v[i] = keep;
    out.push_back((up - down) / (2 * e));
  }
  return out;
}

// Small deterministic integers in [-2, 2].
Vec ints(size_t n, int64_t seed) {
  Vec v(n);
  for (size_t i = 0; i < n; ++i) v[i] = double((int64_t(i) * int64_t(i) + int64_t(i) * 7 + seed * 3) % 5 - 2);
  return v;
}

// ---- real layers: the geometry read from the model's Conv2d ------------------------------------------
const Conv2d& find_conv(const Module& m, const std::string& dotted) {
  const Module* at = &m;
  std::stringstream parts(dotted);
  for (std::string name; std::getline(parts, name, '.');) {
    const Module* next = nullptr;
    for (const auto& [child, mod] : at->children())
      if (child == name) next = mod.get();
    NIMBUS_CHECK(next, "learn_conv: no module ", dotted);
    at = next;
  }
  const auto* c = dynamic_cast<const Conv2d*>(at);
  NIMBUS_CHECK(c, "learn_conv: ", dotted, " is not a Conv2d");
  return *c;
}

ConvGeom geom_of(const Conv2d& c, int64_t N, int64_t H) {
  return ConvGeom{N, c.weight.size(1), H, H, c.weight.size(0), c.weight.size(2), c.weight.size(3), c.stride, c.padding};
}

double mib(int64_t floats) { return double(floats) * 4 / (1024.0 * 1024.0); }

// ---- the measured table ------------------------------------------------------------------------------
std::string repo_root() {  // this file is <root>/docs/learn/examples/learn_conv.cpp
  std::string here = __FILE__;
  const std::string tail = "docs/learn/examples/learn_conv.cpp";
  return here.size() >= tail.size() && here.compare(here.size() - tail.size(), tail.size(), tail) == 0
             ? here.substr(0, here.size() - tail.size())
             : std::string();
}

// dsen2cr_flops: 2*M*N*K of the DSen2-CR layer at the benchmark's batch, checked against the rows.
void measured_table(double dsen2cr_flops) {
  const std::string rel = "bench/results/h200/2026-12-04.jsonl";
  std::ifstream in(repo_root() + rel);
  if (!in) {
    std::printf("%s: not found\n", rel.c_str());
    return;
  }
  // (case, column) -> median ms; columns: nimbus versions 1-3, then the library in fp32, tf32, bf16.
  std::map<std::pair<std::string, std::string>, double> ms;
  std::map<std::string, double> flops;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    const json::Value row = json::parse(line);
    const json::Value *phase = row.get("phase"), *cs = row.get("case"), *impl = row.get("impl"),
                      *prec = row.get("precision"), *med = row.get("median_ms"), *fl = row.get("flops");
    if (!phase || phase->s != "kernels" || !med || !med->is(json::Value::Type::Number)) continue;
    std::string column;
    if (impl->s.rfind("nimbus_v", 0) == 0) column = impl->s.substr(7);
    else if (impl->s == "cudnn" || impl->s == "cublas") column = "lib " + prec->s;
    else continue;
    ms[{cs->s, column}] = med->num;
    if (fl && fl->is(json::Value::Type::Number)) flops[cs->s] = fl->num;
  }
  const char* cases[] = {"gemm_4096",           "dsen2cr_conv3x3_fwd", "dsen2cr_conv3x3_dgrad", "dsen2cr_conv3x3_wgrad",
                         "resnet50_convs_fwd",  "resnet50_convs_dgrad", "resnet50_convs_wgrad"};
  const char* cols[] = {"v1", "v2", "v3", "lib fp32", "lib tf32", "lib bf16"};
  std::printf("H200, %s, median ms (cuBLAS for the GEMM, cuDNN for the convolutions):\n", rel.c_str());
  std::printf("  %-22s", "case");
  for (const char* c : cols) std::printf("%10s", c);
  std::printf("\n");
  for (const char* cs : cases) {
    std::printf("  %-22s", cs);
    for (const char* c : cols) {
      auto it = ms.find({cs, c});
      if (it == ms.end()) std::printf("%10s", "-");
      else std::printf("%10.3g", it->second);
    }
    std::printf("\n");
  }
  const double rows = flops["dsen2cr_conv3x3_fwd"];
  std::printf("  the dsen2cr rows count %.4g flops: 2*M*N*K of the layer at batch 8 above: %s\n", rows,
              yes(std::fabs(rows - dsen2cr_flops) <= 1e-6 * dsen2cr_flops));
}

}  // namespace

int main() {
  // ================= 1. forward: three ways =================
  const ConvGeom g{1, 1, 4, 4, 1, 3, 3, 1, 1};
  Vec x(16), w = {1, 2, 0, 0, 1, -1, -1, 0, 3};
  for (size_t i = 0; i < x.size(); ++i) x[i] = double(i + 1);
  const Vec dy = {1, 0, -1, 2, 0, 1, 1, 0, 2, -1, 0, 1, 1, 0, 0, -1};
  std::printf("x (N,C,H,W) = (1,1,4,4), w (K,C,R,S) = (1,1,3,3), stride %lld, pad %lld -> "
              "y (N,K,P,Q) = (1,1,%lld,%lld)\n",
              (long long)g.stride, (long long)g.pad, (long long)g.P(), (long long)g.Q());
  const Vec y_direct = conv_direct(x, w, g);
  const Vec col = im2col(x, g);
  const int64_t CRS = g.C * g.R * g.S, PQ = g.P() * g.Q();
  const Vec y_gemm = matmul(w, false, col, false, g.K, PQ, CRS);  // y (K, PQ) = W (K, CRS) col (CRS, PQ)
  const Grads nb = nimbus_conv(x, w, dy, g);
  show({{"x", x, 4, 4}, {"w", w, 3, 3}, {"y = conv2d(x, w)", nb.y, 4, 4}});
  std::printf("y by the direct formula, by im2col + GEMM, by nimbus conv2d (CPU path \"%s\"): equal: %s, %s\n",
              cpu::conv2d_path(g, true), yes(y_direct == y_gemm), yes(y_direct == nb.y));
  std::printf("col = im2col(x), (C*R*S, P*Q) = (%lld, %lld); row (c,r,s) holds x[c, p - %lld + r, q - %lld + s] for "
              "every (p,q):\n",
              (long long)CRS, (long long)PQ, (long long)g.pad, (long long)g.pad);
  for (int64_t row = 0; row < CRS; ++row) {
    std::printf("  (%lld,%lld,%lld)", (long long)(row / (g.R * g.S)), (long long)(row / g.S % g.R),
                (long long)(row % g.S));
    for (int64_t j = 0; j < PQ; ++j) std::printf("%4g", col[size_t(row * PQ + j)]);
    std::printf("\n");
  }
  {
    std::vector<float> mine = f(col), theirs(col.size(), -99.f), xf = f(x);
    cpu::im2col(theirs.data(), xf.data(), 1, g);
    std::printf("nimbus' cpu::im2col builds the same matrix: %s; it holds %lld floats for the image's %lld\n",
                yes(mine == theirs), (long long)(CRS * PQ), (long long)(g.C * g.H * g.W));
  }

  // ================= 2. backward: dx and dW =================
  const Vec dx_formula = dx_scatter(dy, w, g), dx_tconv = dx_transposed_conv(dy, w, g, true);
  const Vec dx_wrong = dx_transposed_conv(dy, w, g, false);
  const Vec dcol = matmul(w, true, dy, false, CRS, PQ, g.K);  // dcol (CRS, PQ) = W^T (CRS, K) dy (K, PQ)
  Vec dx_col2im(x.size(), 0.0);                               // col2im: add each column entry back where it came from
  for (int64_t row = 0; row < CRS; ++row)
    for (int64_t p = 0; p < g.P(); ++p)
      for (int64_t q = 0; q < g.Q(); ++q) {
        const int64_t c = row / (g.R * g.S), r = row / g.S % g.R, s = row % g.S;
        const int64_t h = p * g.stride - g.pad + r, wc = q * g.stride - g.pad + s;
        if (h >= 0 && h < g.H && wc >= 0 && wc < g.W)
          dx_col2im[size_t((c * g.H + h) * g.W + wc)] += dcol[size_t(row * PQ + p * g.Q() + q)];
      }
  const Vec dx_fd = finite_differences(x, w, dy, g, true);
  const Vec dw_gemm = matmul(dy, false, col, true, g.K, CRS, PQ);  // dW (K, CRS) = dy (K, PQ) col^T (PQ, CRS)
  const Vec dw_f = dw_formula(dy, x, g), dw_fd = finite_differences(x, w, dy, g, false);
  std::printf("\nbackward for L = sum(dy * y):\n");
  show({{"dy", dy, 4, 4},
        {"dx (nimbus backward)", nb.dx, 4, 4},
        {"dW (nimbus backward)", nb.dw, 3, 3},
        {"wrong dx: w not flipped", dx_wrong, 4, 4}});
  std::printf("dx: nimbus backward (CPU path \"%s\") = the scatter formula: %s\n", cpu::conv2d_path(g, false),
              yes(nb.dx == dx_formula));
  std::printf("    = conv2d(dy padded by R-1-pad = %lld, w transposed and flipped): %s\n", (long long)(g.R - 1 - g.pad),
              yes(nb.dx == dx_tconv));
  std::printf("    = col2im(W^T dy): %s\n", yes(nb.dx == dx_col2im));
  std::printf("    = finite differences of nimbus' forward: %s\n", yes(nb.dx == dx_fd));
  std::printf("dW: nimbus backward = dy (K, P*Q) times col^T (P*Q, C*R*S): %s; = the formula: %s; = finite "
              "differences: %s\n",
              yes(nb.dw == dw_gemm), yes(nb.dw == dw_f), yes(nb.dw == dw_fd));
  int64_t wrong = 0;
  for (size_t i = 0; i < dx_wrong.size(); ++i) wrong += dx_wrong[i] != nb.dx[i];
  std::printf("the planted mistake, dx = conv2d(dy padded, w transposed but not flipped): wrong at %lld of %zu "
              "positions\n",
              (long long)wrong, dx_wrong.size());

  // ================= 3. stride 2: dy dilated =================
  {
    const ConvGeom g2{1, 1, 5, 5, 1, 3, 3, 2, 1};
    Vec x2(25);
    for (size_t i = 0; i < x2.size(); ++i) x2[i] = double(i % 7) - 3;
    const Vec dy2 = {1, -1, 2, 0, 1, 1, -2, 0, 1};
    const Grads n2 = nimbus_conv(x2, w, dy2, g2);
    const Vec t2 = dx_transposed_conv(dy2, w, g2, true);
    std::printf("\nstride 2, pad 1: x (1,1,5,5) -> y (1,1,%lld,%lld); "
                "dx = conv2d(dy with zeros between, padded by %lld, w flipped):\n",
                (long long)g2.P(), (long long)g2.Q(), (long long)(g2.R - 1 - g2.pad));
    show({{"dy", dy2, 3, 3}, {"dy dilated", dilate(dy2, g2), 5, 5}, {"dx (nimbus backward)", n2.dx, 5, 5}});
    std::printf("  equal to nimbus backward: %s; to the scatter formula: %s\n", yes(t2 == n2.dx),
                yes(dx_scatter(dy2, w, g2) == n2.dx));
  }

  // ================= 4. the direct 3x3 CPU path, where dx really is the flipped convolution =================
  std::printf("\nthe CPU's direct 3x3 kernels (stride 1, rows of >= 16 outputs), x (1,2,4,W), w (3,2,3,3):\n");
  for (int64_t pad = 0; pad <= 2; ++pad) {
    const ConvGeom g3{1, 2, 4, 18 - 2 * pad, 3, 3, 3, 1, pad};
    const Vec x3 = ints(size_t(g3.N * g3.C * g3.H * g3.W), 1), w3 = ints(size_t(g3.K * g3.C * 9), 2);
    const Vec dy3 = ints(size_t(g3.N * g3.K * g3.P() * g3.Q()), 3);
    const Grads n3 = nimbus_conv(x3, w3, dy3, g3);
    std::printf("  pad %lld (W %lld, Q %lld), path \"%s\": "
                "largest |difference| from the formulas: y %g, dx %g, dW %g\n",
                (long long)pad, (long long)g3.W, (long long)g3.Q(), cpu::conv2d_path(g3, false),
                max_diff(n3.y, conv_direct(x3, w3, g3)), max_diff(n3.dx, dx_scatter(dy3, w3, g3)),
                max_diff(n3.dw, dw_formula(dy3, x3, g3)));
  }

  // ================= 5. real layers: what im2col would materialise =================
  models::ResNet resnet(models::resnet50_config());
  models::DSen2CRConfig dc;  // the paper's F = 256 with SAR; one block is enough for its shapes
  dc.blocks = 1;
  models::DSen2CR dsen(dc);
  struct Layer {
    const char* model;
    const Module* m;
    const char* name;
    int64_t H;  // input height = width
  };
  // ResNet-50 on a 64x64 EuroSAT tile: conv1 sees 64, maxpool leaves 16 for layer1; each later stage
  // halves it at its first block's 3x3 (docs/learn/04-residual.md). DSen2-CR on a 128x128 patch.
  const Layer layers[] = {{"resnet50", &resnet, "conv1", 64},          {"resnet50", &resnet, "layer1.0.conv2", 16},
                          {"resnet50", &resnet, "layer1.0.conv3", 16}, {"resnet50", &resnet, "layer2.0.conv2", 16},
                          {"resnet50", &resnet, "layer4.0.conv2", 4},  {"dsen2cr", &dsen, "head", 128},
                          {"dsen2cr", &dsen, "blocks.0.conv1", 128},   {"dsen2cr", &dsen, "tail", 128}};
  std::printf("\nreal layers, one image: forward GEMM M_gemm = P*Q, N_gemm = K, K_gemm = C*R*S; im2col (C*R*S x P*Q floats):\n");
  std::printf("  %-24s %-13s %-6s %-14s %6s %4s %5s %9s %7s %7s  %s\n", "layer", "x (C,H,W)", "RxS/st", "y (K,P,Q)",
              "M", "N", "K", "im2col", "MiB", "vs x", "CPU path fwd/bwd");
  for (const Layer& l : layers) {
    const ConvGeom lg = geom_of(find_conv(*l.m, l.name), 1, l.H);
    const int64_t cols = lg.C * lg.R * lg.S * lg.P() * lg.Q();
    char xs[96], ws[96], ys[96], name[96];
    std::snprintf(name, sizeof name, "%s %s", l.model, l.name);
    std::snprintf(xs, sizeof xs, "(%lld,%lld,%lld)", (long long)lg.C, (long long)lg.H, (long long)lg.W);
    std::snprintf(ws, sizeof ws, "%lldx%lld/%lld", (long long)lg.R, (long long)lg.S, (long long)lg.stride);
    std::snprintf(ys, sizeof ys, "(%lld,%lld,%lld)", (long long)lg.K, (long long)lg.P(), (long long)lg.Q());
    std::printf("  %-24s %-13s %-6s %-14s %6lld %4lld %5lld %9lld %7.2f %6.2fx  %s/%s\n", name, xs, ws, ys,
                (long long)(lg.P() * lg.Q()), (long long)lg.K, (long long)(lg.C * lg.R * lg.S), (long long)cols,
                mib(cols), double(cols) / double(lg.C * lg.H * lg.W), cpu::conv2d_path(lg, true),
                cpu::conv2d_path(lg, false));
  }
  double dsen2cr_flops = 0;
  {
    const ConvGeom b = geom_of(find_conv(dsen, "blocks.0.conv1"), 8, 128);  // the GPU benchmark's batch
    const int64_t NPQ = b.N * b.P() * b.Q(), CRSb = b.C * b.R * b.S;
    std::printf("DSen2-CR's 256-channel layer at batch %lld, the three GEMMs:\n", (long long)b.N);
    std::printf("  %-8s %-16s %-36s %7s %5s %7s\n", "", "result", "= product", "M", "N", "K");
    std::printf("  %-8s %-16s %-36s %7lld %5lld %7lld\n", "forward", "y (N*P*Q, K)", "= im2col(x) w^T", (long long)NPQ,
                (long long)b.K, (long long)CRSb);
    std::printf("  %-8s %-16s %-36s %7lld %5lld %7lld\n", "dx", "dx (N*H*W, C)", "= im2col(dy, pad R-1-pad) w flipped",
                (long long)(b.N * b.H * b.W), (long long)b.C, (long long)(b.K * b.R * b.S));
    std::printf("  %-8s %-16s %-36s %7lld %5lld %7lld\n", "dW", "dW (K, C*R*S)", "= dy^T im2col(x)", (long long)b.K,
                (long long)CRSb, (long long)NPQ);
    dsen2cr_flops = 2.0 * double(NPQ) * double(b.K) * double(CRSb);
    std::printf("  2*M*N*K = %.4g flops each; im2col of the batch: %.0f MiB (the CUDA im2col path's workspace cap: "
                "%.0f MiB)\n",
                dsen2cr_flops, mib(b.N * CRSb * b.P() * b.Q()), mib(cuda::kConvWorkspaceFloats));
  }

  // ================= 6. the numbered CUDA versions, measured =================
  std::printf("\n");
  measured_table(dsen2cr_flops);
  return 0;
}
