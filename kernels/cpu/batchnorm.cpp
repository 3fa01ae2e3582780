// batchnorm.cpp: batch-norm CPU kernels, the reference and the fast float path (see batchnorm.h).
#include "kernels/cpu/batchnorm.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "kernels/common/parallel.h"

namespace nimbus::cpu {

// ---------------------------------------------------------------- reference

template <typename T>
void batchnorm_stats_ref(T* mean, T* var, const T* x, int64_t N, int64_t C, int64_t HW) {
  const T M = T(N * HW);
  for (int64_t c = 0; c < C; ++c) {
    T s = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) s += x[(n * C + c) * HW + i];
    T m = s / M, ss = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) {
        T d = x[(n * C + c) * HW + i] - m;
        ss += d * d;
      }
    mean[c] = m;
    var[c] = ss / M;
  }
}

template <typename T>
void batchnorm_forward_ref(T* y, const T* x, const T* mean, const T* invstd, const T* weight, const T* bias,
                           int64_t N, int64_t C, int64_t HW) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < HW; ++i) {
        int64_t k = (n * C + c) * HW + i;
        y[k] = (x[k] - mean[c]) * invstd[c] * (weight ? weight[c] : T(1)) + (bias ? bias[c] : T(0));
      }
}

template <typename T>
void batchnorm_backward_ref(T* dx, T* dweight, T* dbias, const T* dy, const T* x, const T* mean, const T* invstd,
                            const T* weight, int64_t N, int64_t C, int64_t HW, bool training) {
  const T M = T(N * HW);
  for (int64_t c = 0; c < C; ++c) {
    T sdy = 0, sdyx = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) {
        int64_t k = (n * C + c) * HW + i;
        sdy += dy[k];
        sdyx += dy[k] * (x[k] - mean[c]) * invstd[c];
      }
    dbias[c] = sdy;
    dweight[c] = sdyx;
    if (!dx) continue;
    T g = (weight ? weight[c] : T(1)) * invstd[c];
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) {
        int64_t k = (n * C + c) * HW + i;
        T xhat = (x[k] - mean[c]) * invstd[c];
        dx[k] = training ? g * (dy[k] - sdy / M - xhat * sdyx / M) : g * dy[k];
      }
  }
}

// ---------------------------------------------------------------- fast float

template <typename T>
void batchnorm_stats(float* mean, float* var, const T* x, int64_t N, int64_t C, int64_t HW) {
  const double M = double(N * HW);
#pragma omp parallel for if (N * C * HW > kParallelGrain)
  for (int64_t c = 0; c < C; ++c) {
    // One pass over x - k, k the channel's first value: var = E[(x-k)^2] - E[x-k]^2. Unshifted, E[x^2]
    // and E[x]^2 cancel when |mean| >> std (mean 1e4, std 1e-2: a few percent off even in double);
    // shifted by a value of the data, the terms are of the spread's size.
    const double k = M > 0 ? double(float(x[c * HW])) : 0.0;
    double s = 0, ss = 0;
    for (int64_t n = 0; n < N; ++n) {
      const T* xc = x + (n * C + c) * HW;
#pragma omp simd reduction(+ : s, ss)
      for (int64_t i = 0; i < HW; ++i) {
        double v = double(float(xc[i])) - k;
        s += v;
        ss += v * v;
      }
    }
    double d = s / M;
    mean[c] = float(k + d);
    var[c] = float(std::max(ss / M - d * d, 0.0));
  }
}

template <typename T>
void batchnorm_forward(T* y, const T* x, const float* mean, const float* invstd, const float* weight,
                       const float* bias, int64_t N, int64_t C, int64_t HW, bool relu) {
  // y = (x - mean) * scale + shift with the per-channel constants folded; subtracting the
  // mean first (not folding it into shift) avoids cancellation when |mean| >> std.
#pragma omp parallel for collapse(2) if (N * C * HW > kParallelGrain)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const float m = mean[c], scale = invstd[c] * (weight ? weight[c] : 1.f), shift = bias ? bias[c] : 0.f;
      const T* xc = x + (n * C + c) * HW;
      T* yc = y + (n * C + c) * HW;
      if (relu) {
#pragma omp simd
        for (int64_t i = 0; i < HW; ++i) {
          const float v = (float(xc[i]) - m) * scale + shift;
          yc[i] = v < 0.f ? 0.f : v;  // relu_forward's rule: a NaN passes through
        }
      } else {
#pragma omp simd
        for (int64_t i = 0; i < HW; ++i) yc[i] = (float(xc[i]) - m) * scale + shift;
      }
    }
}

namespace {
// kRelu: dy through the ReLU (relu_backward's rule: 0 where y <= 0), read wherever dy is read; a
// template parameter so that each loop stays a plain vector loop.
template <typename T, bool kRelu>
void batchnorm_backward_impl(T* dx, float* dweight, float* dbias, const T* dy, const T* x, const float* mean,
                             const float* invstd, const float* weight, const T* relu_y, int64_t N, int64_t C,
                             int64_t HW, bool training) {
  const double M = double(N * HW);
  // With kRelu, dy is read through the ReLU (relu_backward's rule: 0 where y <= 0, a NaN dy there
  // too): both loads unconditional and the select done on the bits (dy & a mask of all ones where
  // y > 0), so the loops stay vector loops; a ?: there made GCC give up on them.
  auto through_relu = [](float d, float y) {
    return std::bit_cast<float>(std::bit_cast<uint32_t>(d) & (0u - uint32_t(y > 0.f)));
  };
#pragma omp parallel for if (N * C * HW > kParallelGrain)
  for (int64_t c = 0; c < C; ++c) {
    const double m = mean[c], is = invstd[c];
    double sdy = 0, sdyx = 0;  // sum dy and sum dy * (x - mean); xhat's invstd applied once after
    for (int64_t n = 0; n < N; ++n) {
      const int64_t base = (n * C + c) * HW;
      const T *xc = x + base, *dyc = dy + base, *ryc = kRelu ? relu_y + base : nullptr;
#pragma omp simd reduction(+ : sdy, sdyx)
      for (int64_t i = 0; i < HW; ++i) {
        float d = float(dyc[i]);
        if constexpr (kRelu) d = through_relu(d, float(ryc[i]));
        sdy += d;
        sdyx += double(d) * (double(float(xc[i])) - m);
      }
    }
    sdyx *= is;
    dbias[c] = float(sdy);
    dweight[c] = float(sdyx);
    if (!dx) continue;
    // dx = g * dy + a * (x - mean) + b, with the per-channel constants folded.
    const float g = float((weight ? weight[c] : 1.f) * is), mf = mean[c];
    float a = 0, b = 0;
    if (training) {
      a = float(-double(g) * is * sdyx / M);
      b = float(-double(g) * sdy / M);
    }
    for (int64_t n = 0; n < N; ++n) {
      const int64_t base = (n * C + c) * HW;
      const T *xc = x + base, *dyc = dy + base, *ryc = kRelu ? relu_y + base : nullptr;
      T* dxc = dx + base;
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i) {
        float d = float(dyc[i]);
        if constexpr (kRelu) d = through_relu(d, float(ryc[i]));
        dxc[i] = g * d + a * (float(xc[i]) - mf) + b;
      }
    }
  }
}
}  // namespace

template <typename T>
void batchnorm_backward(T* dx, float* dweight, float* dbias, const T* dy, const T* x, const float* mean,
                        const float* invstd, const float* weight, const T* relu_y, int64_t N, int64_t C, int64_t HW,
                        bool training) {
  if (relu_y)
    batchnorm_backward_impl<T, true>(dx, dweight, dbias, dy, x, mean, invstd, weight, relu_y, N, C, HW, training);
  else
    batchnorm_backward_impl<T, false>(dx, dweight, dbias, dy, x, mean, invstd, weight, relu_y, N, C, HW, training);
}

// The fast kernels for float32 and bfloat16 activations (statistics and parameters float32).
#define NIMBUS_INSTANTIATE_ACT(T)                                                                                \
  template void batchnorm_stats<T>(float*, float*, const T*, int64_t, int64_t, int64_t);                         \
  template void batchnorm_forward<T>(T*, const T*, const float*, const float*, const float*, const float*, int64_t, \
                                     int64_t, int64_t, bool);                                                    \
  template void batchnorm_backward<T>(T*, float*, float*, const T*, const T*, const float*, const float*,         \
                                      const float*, const T*, int64_t, int64_t, int64_t, bool);
NIMBUS_INSTANTIATE_ACT(float)
NIMBUS_INSTANTIATE_ACT(bfloat16)
#undef NIMBUS_INSTANTIATE_ACT

// ---------------------------------------------------------------- per-channel helpers

template <typename T>
void batchnorm_invstd(T* invstd, const T* var, T eps, int64_t C) {
  for (int64_t c = 0; c < C; ++c) invstd[c] = T(1) / std::sqrt(var[c] + eps);
}

template <typename T>
void batchnorm_update_running(T* running_mean, T* running_var, const T* mean, const T* var, T momentum, int64_t M,
                              int64_t C) {
  const T unbias = T(M) / T(M - 1);
  for (int64_t c = 0; c < C; ++c) {
    running_mean[c] = (T(1) - momentum) * running_mean[c] + momentum * mean[c];
    running_var[c] = (T(1) - momentum) * running_var[c] + momentum * var[c] * unbias;
  }
}

#define NIMBUS_INSTANTIATE(T)                                                                                   \
  template void batchnorm_stats_ref<T>(T*, T*, const T*, int64_t, int64_t, int64_t);                           \
  template void batchnorm_forward_ref<T>(T*, const T*, const T*, const T*, const T*, const T*, int64_t, int64_t, \
                                         int64_t);                                                              \
  template void batchnorm_backward_ref<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, int64_t, \
                                          int64_t, int64_t, bool);                                              \
  template void batchnorm_invstd<T>(T*, const T*, T, int64_t);                                                  \
  template void batchnorm_update_running<T>(T*, T*, const T*, const T*, T, int64_t, int64_t);
NIMBUS_INSTANTIATE(float)
NIMBUS_INSTANTIATE(double)
#undef NIMBUS_INSTANTIATE

}  // namespace nimbus::cpu
