// loss.cpp: loss and softmax CPU kernels (see loss.h).
#include "kernels/cpu/loss.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/common/class_index.h"
#include "kernels/common/parallel.h"

namespace nimbus::cpu {

namespace {
template <typename T>
T sign(T d) {
  return T((d > T(0)) - (d < T(0)));
}

// The sum of part(j) for j in [0, parts), in double, the parts run in parallel and added in order:
// the same bits for any thread count. (An OpenMP reduction adds per-thread sums, which the thread count
// decides: a loss, and so metrics.csv and the choice of the best epoch, moved in the last bits with
// --threads.) `work` is the number of elements behind all the parts, for the serial cut-off.
template <typename Part>
double sum_in_order(int64_t parts, int64_t work, const Part& part) {
  std::vector<double> sums(static_cast<size_t>(parts));
#pragma omp parallel for if (work > kParallelGrain)
  for (int64_t j = 0; j < parts; ++j) sums[size_t(j)] = part(j);
  double s = 0;
  for (double v : sums) s += v;
  return s;
}

// A flat sum cut into parts of this many elements (by the size alone).
constexpr int64_t kSumPart = 4096;

// The sum of term(i) for i in [0, n), in double, by sum_in_order's parts of kSumPart elements.
template <typename Term>
double flat_sum_in_order(int64_t n, const Term& term) {
  return sum_in_order((n + kSumPart - 1) / kSumPart, n, [&](int64_t j) {
    double part = 0;
    const int64_t end = std::min(n, (j + 1) * kSumPart);
#pragma omp simd reduction(+ : part)
    for (int64_t i = j * kSumPart; i < end; ++i) part += term(i);
    return part;
  });
}

// Softmax of one row of K logits into y; returns log(sum exp(x)) (the logsumexp).
template <typename T>
T softmax_row(T* y, const T* x, int64_t K) {
  T mx = x[0];
  for (int64_t k = 1; k < K; ++k) mx = std::max(mx, x[k]);
  T s = 0;
  for (int64_t k = 0; k < K; ++k) s += (y[k] = std::exp(x[k] - mx));
  for (int64_t k = 0; k < K; ++k) y[k] /= s;
  return mx + std::log(s);
}
}  // namespace

template <typename T>
void softmax_forward(T* y, const T* x, int64_t N, int64_t K) {
#pragma omp parallel for if (N * K > kParallelGrain)
  for (int64_t n = 0; n < N; ++n) softmax_row(y + n * K, x + n * K, K);
}

template <typename T>
T cross_entropy_forward(T* prob, const T* logits, const T* target, int64_t N, int64_t K) {
  // One part per row (its softmax written on the way).
  const double s = sum_in_order(N, N * K, [&](int64_t n) {
    T lse = softmax_row(prob + n * K, logits + n * K, K);
    return is_class_index(target[n], K) ? double(lse - logits[n * K + int64_t(target[n])]) : double(NAN);
  });
  return T(s / double(N));
}

template <typename T>
void cross_entropy_backward(T* dlogits, const T* prob, const T* target, T g, int64_t N, int64_t K) {
  const T scale = g / T(N);
#pragma omp parallel for if (N * K > kParallelGrain)
  for (int64_t n = 0; n < N; ++n) {
    const bool valid = is_class_index(target[n], K);
    const int64_t t = valid ? int64_t(target[n]) : -1;
    for (int64_t k = 0; k < K; ++k) dlogits[n * K + k] = valid ? scale * (prob[n * K + k] - T(k == t)) : T(NAN);
  }
}

template <typename T>
T l1_forward(const T* p, const T* t, int64_t n) {
  const double s = flat_sum_in_order(n, [&](int64_t i) { return double(std::fabs(p[i] - t[i])); });
  return T(s / double(n));
}

template <typename T>
void l1_backward(T* dp, const T* p, const T* t, T g, int64_t n) {
  const T scale = g / T(n);
#pragma omp parallel for simd if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) dp[i] = scale * sign(p[i] - t[i]);
}

template <typename T>
T mse_forward(const T* p, const T* t, int64_t n) {
  const double s = flat_sum_in_order(n, [&](int64_t i) {
    const double d = double(p[i] - t[i]);
    return d * d;
  });
  return T(s / double(n));
}

template <typename T>
void mse_backward(T* dp, const T* p, const T* t, T g, int64_t n) {
  const T scale = T(2) * g / T(n);
#pragma omp parallel for simd if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) dp[i] = scale * (p[i] - t[i]);
}

template <typename T>
T carl_forward(const T* P, const T* Tg, const T* I, const T* M, T lambda, int64_t N, int64_t C, int64_t HW) {
  // One part per (image, band) plane.
  const double s = sum_in_order(N * C, N * C * HW, [&](int64_t plane) {
    const int64_t o = plane * HW;
    const T* m = M + plane / C * HW;
    double part = 0;
    for (int64_t i = 0; i < HW; ++i) {
      T dt = std::fabs(P[o + i] - Tg[o + i]), di = std::fabs(P[o + i] - I[o + i]);
      part += double((m[i] + lambda) * dt + (T(1) - m[i]) * di);
    }
    return part;
  });
  return T(s / double(N * C * HW));
}

template <typename T>
void carl_backward(T* dP, const T* P, const T* Tg, const T* I, const T* M, T lambda, T g, int64_t N, int64_t C,
                   int64_t HW) {
  const T scale = g / T(N * C * HW);
#pragma omp parallel for collapse(2) if (N * C * HW > kParallelGrain)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t o = (n * C + c) * HW;
      const T* m = M + n * HW;
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i)
        dP[o + i] = scale * ((m[i] + lambda) * sign(P[o + i] - Tg[o + i]) + (T(1) - m[i]) * sign(P[o + i] - I[o + i]));
    }
}

#define NIMBUS_INSTANTIATE(T)                                                                                 \
  template void softmax_forward<T>(T*, const T*, int64_t, int64_t);                                          \
  template T cross_entropy_forward<T>(T*, const T*, const T*, int64_t, int64_t);                             \
  template void cross_entropy_backward<T>(T*, const T*, const T*, T, int64_t, int64_t);                      \
  template T l1_forward<T>(const T*, const T*, int64_t);                                                     \
  template void l1_backward<T>(T*, const T*, const T*, T, int64_t);                                          \
  template T mse_forward<T>(const T*, const T*, int64_t);                                                    \
  template void mse_backward<T>(T*, const T*, const T*, T, int64_t);                                         \
  template T carl_forward<T>(const T*, const T*, const T*, const T*, T, int64_t, int64_t, int64_t);          \
  template void carl_backward<T>(T*, const T*, const T*, const T*, const T*, T, T, int64_t, int64_t, int64_t);
NIMBUS_INSTANTIATE(float)
NIMBUS_INSTANTIATE(double)
#undef NIMBUS_INSTANTIATE

}  // namespace nimbus::cpu
