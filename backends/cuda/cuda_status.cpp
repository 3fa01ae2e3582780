/* cuda_status.cpp: prints whether the real CUDA backend found a device (and which driver/runtime);
 * exits 0 with a usable device, 1 without. For CI and for checking a GPU machine by hand.
 *
 * cuda_status --nccl: the "nccl" process group (nccl_group.cu) on the GPU, at world size 1 (all a
 * one-GPU machine allows: NCCL refuses two ranks on one device). Loads NCCL ($NIMBUS_NCCL_LIB, else
 * the library path), builds the communicator, and for message sizes from 4 KiB to 64 MiB checks that
 * an in-place sum and mean of one rank leave the data exactly as it was, then times the sum: 20 runs
 * after 3 warm-ups, each between two CUDA events on the backend's stream, fresh random data each time;
 * one JSON row per size (scripts/gpu/results.py's fields: median, p10, p90 in ms). At world size 1
 * NCCL only copies, so the figure is its fixed cost per call, not a link's bandwidth. Exit 0: every
 * check passed; 1: a mismatch or an error; 77: no GPU. (One program for both: each program carries
 * every kernel, and the bundle a GPU machine receives is size-limited.) */
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "backends/cuda/backend.h"
#include "engine/backend.h"
#include "engine/distributed/process_group.h"
#include "engine/random.h"
#include "engine/tensor.h"
#include "kernels/cuda/compat.h"

using namespace nimbus;

namespace {

int nccl_check() {
  try {
    if (!cuda::register_cuda_backend()) {
      std::fprintf(stderr, "cuda_status --nccl: %s\n", cuda_status().c_str());
      return 77;
    }
    ::setenv("NIMBUS_PROCESS_GROUP", "nccl", 0);
    ProcessGroup& g = world();
    std::fprintf(stderr, "cuda_status --nccl: %s; %s\n", describe_rank().c_str(), cuda_status().c_str());
    Rng rng(7);
    size_t mismatches = 0;
    cudaEvent_t start, stop;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    for (size_t n = 1024; n <= (size_t(1) << 24); n *= 4) {
      std::vector<float> host(n);
      for (float& v : host) v = rng.uniform() - 0.5f;
      Tensor d = Tensor::from_vector({int64_t(n)}, host).to(Device::CUDA);
      for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Mean}) {
        d.copy_(Tensor::from_vector({int64_t(n)}, host));
        g.start_all_reduce(d.data(), n, op, Device::CUDA)->wait();
        const std::vector<float> got = d.to_vector();  // one rank: the sum and the mean are the data itself
        for (size_t i = 0; i < n; ++i) mismatches += got[i] != host[i];
      }
      std::vector<double> ms;
      for (int r = 0; r < 23; ++r) {
        for (float& v : host) v = rng.uniform();
        d.copy_(Tensor::from_vector({int64_t(n)}, host));
        cudaEventRecord(start, cuda::launch_stream());
        g.start_all_reduce(d.data(), n, ReduceOp::Sum, Device::CUDA)->wait();
        cudaEventRecord(stop, cuda::launch_stream());
        cudaEventSynchronize(stop);
        float t = 0;
        cudaEventElapsedTime(&t, start, stop);
        if (r >= 3) ms.push_back(double(t));
      }
      std::sort(ms.begin(), ms.end());
      const double med = ms[ms.size() / 2];
      // A row in scripts/gpu/results.py's fields.
      std::printf("{\"case\":\"allreduce_%zuB\",\"impl\":\"nccl\",\"precision\":\"fp32\",\"ok\":%s,"
                  "\"ranks\":%d,\"bytes\":%zu,\"median_ms\":%.6g,\"p10_ms\":%.6g,\"p90_ms\":%.6g,"
                  "\"nimbus_ms\":%.6g}\n",
                  n * sizeof(float), mismatches ? "false" : "true", g.size(), n * sizeof(float), med,
                  ms[ms.size() / 10], ms[ms.size() * 9 / 10], med);
      std::fflush(stdout);
    }
    if (mismatches) {
      std::fprintf(stderr, "cuda_status --nccl: %zu values changed by a one-rank all-reduce\n", mismatches);
      return 1;
    }
    std::fprintf(stderr, "cuda_status --nccl: one-rank sums and means exact at every size\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cuda_status --nccl: %s\n", e.what());
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--nccl") == 0) return nccl_check();
  if (argc != 1) {
    std::fprintf(stderr, "usage: cuda_status [--nccl]\n");
    return 2;
  }
  const bool ok = cuda::register_cuda_backend();
  std::printf("%s\n", cuda_status().c_str());
  return ok ? 0 : 1;
}
