// bench_allreduce.cpp: the all-reduce of data-parallel training (engine/distributed), timed per
// message size: what averaging a model's gradients costs between ranks. Run it under mpirun:
//
//   mpirun -np 2 build/bench/bench_allreduce [--max-floats N] [--reps R]
//
// For each size from 1 Ki floats to N (default 16 Mi, DSen2-CR's 18.9 M parameters are in range), R
// timed all-reduces after 3 warm-up ones, fresh random data each time; prints one JSON line per size
// on rank 0: the median seconds (averaged over the ranks) and the algorithm bandwidth (bytes / time). Alone (no mpirun) it
// says there is nothing to measure.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/distributed/process_group.h"
#include "engine/random.h"
#include "kernels/common/error.h"

using namespace nimbus;

int main(int argc, char** argv) {
  size_t max_floats = size_t(1) << 24;
  int reps = 10;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--max-floats" && i + 1 < argc) max_floats = std::stoull(argv[++i]);
    else if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: mpirun -np N bench_allreduce [--max-floats N] [--reps R]\n");
      return 2;
    }
  }
  try {
    ProcessGroup& pg = world();
    if (pg.size() < 2) {
      std::fprintf(stderr, "bench_allreduce: one process (%s): start it with mpirun -np 2 or more\n", pg.kind());
      return 1;
    }
    Rng rng(uint64_t(pg.rank()) + 1);
    for (size_t n = 1024; n <= max_floats; n *= 4) {
      std::vector<float> buf(n);
      std::vector<double> times;
      for (int r = 0; r < reps + 3; ++r) {
        for (float& v : buf) v = rng.uniform();
        pg.barrier();
        const auto t0 = std::chrono::steady_clock::now();
        pg.all_reduce_sum(buf.data(), n);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (r >= 3) times.push_back(s);
      }
      std::sort(times.begin(), times.end());
      double median = times[times.size() / 2];
      pg.all_reduce_sum(&median, 1);  // the ranks' medians, averaged
      median /= double(pg.size());
      if (pg.rank() == 0)
        std::printf("{\"bench\":\"allreduce\",\"kind\":\"%s\",\"ranks\":%d,\"floats\":%zu,\"bytes\":%zu,"
                    "\"median_s\":%.6g,\"algbw_GBps\":%.4g}\n",
                    pg.kind(), pg.size(), n, n * sizeof(float), median, double(n * sizeof(float)) / median / 1e9);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_allreduce: %s\n", e.what());
    abort_all(1);
    return 1;
  }
  return 0;
}
