// learn_winograd.cpp: the numbers of docs/learn/02-convolution.md's Winograd section. F(2,3) in one
// dimension (4 multiplies for 2 outputs instead of 6), then F(2x2,3x3) on one 4x4 tile with every
// matrix printed (B^T d B, G g G^T, their product, A^T M A), nimbus' kernel
// (kernels/cpu/conv2d_winograd.cpp) on a small image against the direct formula, the weight gradient's
// F(3,2) and nimbus' weight-gradient kernel on the same image, and what the transforms cost beside the
// products on DSen2-CR's 256-channel layer.
// docs/learn/build.py pastes this output into the page; ctest checks the page still matches.
//
// Inputs and filters are small integers: G's halves make U multiples of 1/4 and every sum below is
// exact in float, so the output does not depend on the order a machine adds in.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/cpu/conv2d_winograd.h"

using namespace nimbus;
using cpu::ConvGeom;

namespace {
using Mat = std::vector<std::vector<double>>;  // rows

Mat mul(const Mat& a, const Mat& b) {
  Mat c(a.size(), std::vector<double>(b[0].size(), 0.0));
  for (size_t i = 0; i < a.size(); ++i)
    for (size_t j = 0; j < b[0].size(); ++j)
      for (size_t k = 0; k < b.size(); ++k) c[i][j] += a[i][k] * b[k][j];
  return c;
}
Mat transpose(const Mat& a) {
  Mat t(a[0].size(), std::vector<double>(a.size()));
  for (size_t i = 0; i < a.size(); ++i)
    for (size_t j = 0; j < a[0].size(); ++j) t[j][i] = a[i][j];
  return t;
}

// Matrices side by side, each under its title.
void show(const std::vector<std::pair<std::string, Mat>>& ms) {
  size_t rows = 0;
  std::vector<size_t> width;
  for (const auto& [t, m] : ms) {
    rows = std::max(rows, m.size());
    width.push_back(std::max(t.size(), m[0].size() * 7));
  }
  std::string line = " ";
  for (size_t i = 0; i < ms.size(); ++i) line += " " + ms[i].first + std::string(width[i] - ms[i].first.size() + 2, ' ');
  std::printf("%s\n", line.substr(0, line.find_last_not_of(' ') + 1).c_str());
  for (size_t r = 0; r < rows; ++r) {
    line = " ";
    for (size_t i = 0; i < ms.size(); ++i) {
      std::string cell;
      for (size_t c = 0; r < ms[i].second.size() && c < ms[i].second[r].size(); ++c) {
        char b[32];
        std::snprintf(b, sizeof b, "%7g", ms[i].second[r][c] + 0.0);  // + 0.0: -0 printed as 0
        cell += b;
      }
      line += " " + cell + std::string(width[i] + 2 - cell.size(), ' ');
    }
    std::printf("%s\n", line.substr(0, line.find_last_not_of(' ') + 1).c_str());
  }
}
const char* yes(bool b) { return b ? "yes" : "NO"; }

// The matrices of conv2d_winograd.h.
const Mat BT = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
const Mat G = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
const Mat AT = {{1, 1, 1, 0}, {0, 1, -1, -1}};
}  // namespace

int main() {
  // ================= 1. one dimension: F(2,3) =================
  const std::vector<double> d = {3, -1, 2, 5}, g = {1, 2, -1};
  std::printf("F(2,3): 2 outputs of a 3-tap filter g over 4 inputs d, d = (3, -1, 2, 5), g = (1, 2, -1)\n");
  const double y0 = d[0] * g[0] + d[1] * g[1] + d[2] * g[2], y1 = d[1] * g[0] + d[2] * g[1] + d[3] * g[2];
  std::printf("  direct:   y0 = d0 g0 + d1 g1 + d2 g2 = %g, y1 = d1 g0 + d2 g1 + d3 g2 = %g   (6 multiplies)\n", y0, y1);
  const double m1 = (d[0] - d[2]) * g[0], m2 = (d[1] + d[2]) * (g[0] + g[1] + g[2]) / 2;
  const double m3 = (d[2] - d[1]) * (g[0] - g[1] + g[2]) / 2, m4 = (d[1] - d[3]) * g[2];
  std::printf("  Winograd: m1 = (d0 - d2) g0 = %g, m2 = (d1 + d2)(g0 + g1 + g2)/2 = %g,\n", m1, m2);
  std::printf("            m3 = (d2 - d1)(g0 - g1 + g2)/2 = %g, m4 = (d1 - d3) g2 = %g   (4 multiplies)\n", m3, m4);
  std::printf("            y0 = m1 + m2 + m3 = %g, y1 = m2 - m3 - m4 = %g: equal: %s\n", m1 + m2 + m3, m2 - m3 - m4,
              yes(m1 + m2 + m3 == y0 && m2 - m3 - m4 == y1));

  // ================= 2. two dimensions: F(2x2,3x3) on one tile =================
  const Mat dt = {{1, 2, 0, -1}, {3, -2, 1, 0}, {0, 1, 2, 2}, {-1, 0, 1, 3}};
  const Mat gt = {{1, 0, -1}, {2, 1, 0}, {0, -1, 1}};
  const Mat V = mul(mul(BT, dt), transpose(BT)), U = mul(mul(G, gt), transpose(G));
  Mat M(4, std::vector<double>(4));
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) M[i][j] = U[size_t(i)][size_t(j)] * V[size_t(i)][size_t(j)];
  const Mat Y = mul(mul(AT, M), transpose(AT));
  Mat direct(2, std::vector<double>(2, 0.0));
  for (int p = 0; p < 2; ++p)
    for (int q = 0; q < 2; ++q)
      for (int r = 0; r < 3; ++r)
        for (int s = 0; s < 3; ++s) direct[size_t(p)][size_t(q)] += gt[size_t(r)][size_t(s)] * dt[size_t(p + r)][size_t(q + s)];
  std::printf("\nF(2x2,3x3): a 4x4 input tile d and a 3x3 filter g give the 2x2 outputs Y = A^T [(G g G^T) .* (B^T d B)] A\n");
  show({{"d", dt}, {"g", gt}, {"V = B^T d B", V}});
  show({{"U = G g G^T", U}, {"M = U .* V", M}, {"Y = A^T M A", Y}, {"direct", direct}});
  std::printf("  16 multiplies (M) instead of 2*2*9 = 36; Y equals the direct outputs: %s\n", yes(Y == direct));

  // ================= 3. nimbus' kernel on an image =================
  // x (1,2,7,9), w (3,2,3,3), pad 1: 4 x 5 tiles, the last row and column of tiles half outside.
  const ConvGeom gi{1, 2, 7, 9, 3, 3, 3, 1, 1};
  std::vector<float> x(size_t(gi.N * gi.C * gi.H * gi.W)), w(size_t(gi.K * gi.C * 9)), y(size_t(gi.K * gi.P() * gi.Q()));
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i * 7 % 11) - 5);
  for (size_t i = 0; i < w.size(); ++i) w[i] = float(int(i * 5 % 7) - 3);
  std::vector<float> ws(size_t(cpu::conv2d_winograd_workspace(gi)));
  cpu::conv2d_winograd_forward(y.data(), x.data(), w.data(), nullptr, gi, ws.data());
  size_t equal = 0;
  for (int64_t k = 0; k < gi.K; ++k)
    for (int64_t p = 0; p < gi.P(); ++p)
      for (int64_t q = 0; q < gi.Q(); ++q) {
        double sum = 0;
        for (int64_t c = 0; c < gi.C; ++c)
          for (int64_t r = 0; r < 3; ++r)
            for (int64_t s = 0; s < 3; ++s) {
              const int64_t h = p - 1 + r, v = q - 1 + s;
              if (h >= 0 && h < gi.H && v >= 0 && v < gi.W)
                sum += double(w[size_t(((k * gi.C + c) * 3 + r) * 3 + s)]) * double(x[size_t((c * gi.H + h) * gi.W + v)]);
            }
        equal += double(y[size_t((k * gi.P() + p) * gi.Q() + q)]) == sum;
      }
  std::printf("\nnimbus' cpu::conv2d_winograd_forward, x (1,2,7,9), w (3,2,3,3), pad 1 (%lld x %lld tiles): "
              "%zu of %zu outputs equal the direct formula\n",
              (long long)((gi.P() + 1) / 2), (long long)((gi.Q() + 1) / 2), equal, y.size());

  // ================= 4. the weight gradient: F(3,2), the same matrices read the other way =================
  // dw_r = sum_i dy_i d_{i+r}: 3 outputs of a 2-tap "filter" dy over the same 4 inputs. The forward's sum
  // y . dy = g . G^T [(A dy) .* (B^T d)] (A = (A^T)^T) gives dw = G^T [(A dy) .* (B^T d)]: 4 multiplies, not 6.
  const std::vector<double> dy1 = {2, -1};
  const double w0 = dy1[0] * d[0] + dy1[1] * d[1], w1 = dy1[0] * d[1] + dy1[1] * d[2], w2 = dy1[0] * d[2] + dy1[1] * d[3];
  const Mat Ady = mul(transpose(AT), Mat{{dy1[0]}, {dy1[1]}}), BTd = mul(BT, Mat{{d[0]}, {d[1]}, {d[2]}, {d[3]}});
  Mat m(4, std::vector<double>(1));
  for (int j = 0; j < 4; ++j) m[size_t(j)][0] = Ady[size_t(j)][0] * BTd[size_t(j)][0];
  const Mat dw1 = mul(transpose(G), m);
  std::printf("\nF(3,2), the weight gradient: dw_r = sum_i dy_i d_(i+r) for dy = (2, -1) over the same d\n");
  std::printf("  direct:   dw = (%g, %g, %g)   (6 multiplies)\n", w0, w1, w2);
  std::printf("  Winograd: A dy = (%g, %g, %g, %g), B^T d = (%g, %g, %g, %g), m = (%g, %g, %g, %g)   (4 multiplies)\n",
              Ady[0][0], Ady[1][0], Ady[2][0], Ady[3][0], BTd[0][0], BTd[1][0], BTd[2][0], BTd[3][0], m[0][0], m[1][0],
              m[2][0], m[3][0]);
  std::printf("            dw = G^T m = (%g, %g, %g): equal: %s\n", dw1[0][0], dw1[1][0], dw1[2][0],
              yes(dw1[0][0] == w0 && dw1[1][0] == w1 && dw1[2][0] == w2));
  // nimbus' kernel: dw of the image above for a small-integer dy (its sums are exact in float).
  std::vector<float> dyi(y.size()), dw(w.size());
  for (size_t i = 0; i < dyi.size(); ++i) dyi[i] = float(int(i * 3 % 5) - 2);
  cpu::conv2d_winograd_backward_weight(dw.data(), dyi.data(), x.data(), gi, ws.data());
  size_t dw_equal = 0;
  for (int64_t k = 0; k < gi.K; ++k)
    for (int64_t c = 0; c < gi.C; ++c)
      for (int64_t r = 0; r < 3; ++r)
        for (int64_t s = 0; s < 3; ++s) {
          double sum = 0;
          for (int64_t p = 0; p < gi.P(); ++p)
            for (int64_t q = 0; q < gi.Q(); ++q) {
              const int64_t h = p - 1 + r, v = q - 1 + s;
              if (h >= 0 && h < gi.H && v >= 0 && v < gi.W)
                sum += double(dyi[size_t((k * gi.P() + p) * gi.Q() + q)]) * double(x[size_t((c * gi.H + h) * gi.W + v)]);
            }
          dw_equal += double(dw[size_t(((k * gi.C + c) * 3 + r) * 3 + s)]) == sum;
        }
  std::printf("nimbus' cpu::conv2d_winograd_backward_weight on that image: %zu of %zu weights equal the direct formula\n",
              dw_equal, dw.size());

  // ================= 5. what the transforms cost on DSen2-CR's layer =================
  const int64_t C = 256, K = 256, HW = 128 * 128, tiles = HW / 4;
  const double direct_mul = double(HW) * double(K) * double(C) * 9, product_mul = double(tiles) * 16 * double(K) * double(C);
  // Additions (conv2d_winograd.cpp): V = B^T d B, 4 per column then 4 per row, 32 per tile and input
  // channel; Y = A^T M A, 4 per column then 4 per output row, 24 per tile and output channel.
  const double input_adds = double(tiles) * double(C) * 32, output_adds = double(tiles) * double(K) * 24;
  std::printf("\nDSen2-CR's 256 -> 256 layer on a 128 x 128 patch (%lld tiles):\n", (long long)tiles);
  std::printf("  %-33s %.4g\n", "direct multiply-adds", direct_mul);
  std::printf("  %-33s %.4g (%.2fx fewer)\n", "Winograd products' multiply-adds", product_mul, direct_mul / product_mul);
  std::printf("  transforms' additions: inputs %.4g, outputs %.4g (%.1f%% of the products' work)\n", input_adds,
              output_adds, 100 * (input_adds + output_adds) / product_mul);
  const ConvGeom layer{1, C, 128, 128, K, 3, 3, 1, 1};
  std::printf("  routed to Winograd by conv2d_forward: %s; its data gradient: %s; its weight gradient: %s\n",
              yes(cpu::conv2d_winograd_applies(layer)), yes(cpu::conv2d_winograd_applies_data_grad(layer)),
              yes(cpu::conv2d_winograd_applies_weight_grad(layer)));
  return 0;
}
