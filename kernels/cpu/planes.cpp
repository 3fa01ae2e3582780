// planes.cpp: pad_planes (planes.h).
#include "kernels/cpu/planes.h"

#include <cstring>

#include "kernels/common/parallel.h"

namespace nimbus::cpu {

void pad_planes(float* dst, const float* src, int64_t N, int64_t C, int64_t H, int64_t W, int64_t pad,
                const Planes& pl) {
#pragma omp parallel for collapse(2) schedule(static) if (N * C * pl.L > kParallelGrain)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      float* d = dst + n * C * pl.L + c * pl.cs;
      const float* s = src + (n * C + c) * H * W;
      for (int64_t h = 0; h < pl.Hp; ++h) {
        float* row = d + h * pl.rs;
        if (h < pad || h >= H + pad) {
          std::fill(row, row + pl.Wp, 0.f);
          continue;
        }
        std::fill(row, row + pad, 0.f);
        std::memcpy(row + pad, s + (h - pad) * W, sizeof(float) * W);
        std::fill(row + pad + W, row + pl.Wp, 0.f);
      }
    }
}

}  // namespace nimbus::cpu
