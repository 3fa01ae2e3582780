// bench_allreduce.cpp: the all-reduce of data-parallel training (engine/distributed), timed per
// message size: what averaging a model's gradients costs between ranks. Run it under mpirun:
//
//   mpirun -np 2 build/bench/bench_allreduce [--max-floats N] [--reps R]
//
// For each size from 1 Ki floats to N (default 16 Mi, DSen2-CR's 18.9 M parameters are in range), R
// timed all-reduces after 3 warm-up ones, fresh random data each time; prints one JSON line per size
// on rank 0: the median seconds (averaged over the ranks) and the algorithm bandwidth (bytes / time). Alone (no mpirun) it
// says there is nothing to measure.
//
// First it validates (check() below): blocking and started all-reduces, float and double, sums and
// means, at sizes around the MPI group's 16 MiB chunks, against the exact result; a wrong element
// ends the run with exit 1 before anything is timed. --check-only stops after that (a ctest case).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <string>
#include <vector>

#include "engine/distributed/process_group.h"
#include "engine/random.h"
#include "kernels/common/error.h"

using namespace nimbus;

namespace {

// Rank r's element i: a small integer, so that every sum and mean over the ranks is exact in float.
double term(int rank, size_t i) { return double((i * 7 + size_t(rank) * 3) % 1001) - 500.0; }

// Every kind of all-reduce the group has, each compared with the exact result element by element.
// Returns the number of sizes checked; throws naming the first wrong element.
int check(ProcessGroup& pg) {
  const size_t chunk = (size_t(16) << 20) / sizeof(float);  // the MPI group's chunk, in floats
  const size_t sizes[] = {1, 1000, chunk - 1, chunk, chunk + 3, 2 * chunk + 5};
  auto expect = [&](size_t i) {
    double s = 0;
    for (int r = 0; r < pg.size(); ++r) s += term(r, i);
    return s;
  };
  for (size_t n : sizes) {
    std::vector<float> f(n);
    std::vector<double> d(n);
    for (size_t i = 0; i < n; ++i) f[i] = float(term(pg.rank(), i)), d[i] = term(pg.rank(), i);
    pg.all_reduce_sum(f.data(), n);
    pg.all_reduce_sum(d.data(), n);
    for (size_t i = 0; i < n; ++i)
      NIMBUS_CHECK(double(f[i]) == expect(i) && d[i] == expect(i), "all_reduce_sum of ", n, " values: element ", i,
                   " is ", f[i], " (float) and ", d[i], " (double), want ", expect(i));
    for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Mean}) {
      for (size_t i = 0; i < n; ++i) f[i] = float(term(pg.rank(), i));
      pg.start_all_reduce(f.data(), n, op, Device::CPU)->wait();
      const double scale = op == ReduceOp::Mean ? double(1.0f / float(pg.size())) : 1.0;
      for (size_t i = 0; i < n; ++i)
        NIMBUS_CHECK(f[i] == float(expect(i)) * float(scale), "start_all_reduce (",
                     op == ReduceOp::Mean ? "mean" : "sum", ") of ", n, " floats: element ", i, " is ", f[i],
                     ", want ", float(expect(i)) * float(scale));
    }
  }
  return int(std::size(sizes));
}

}  // namespace

int main(int argc, char** argv) {
  size_t max_floats = size_t(1) << 24;
  int reps = 10;
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--max-floats" && i + 1 < argc) max_floats = std::stoull(argv[++i]);
    else if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--check-only") check_only = true;
    else {
      std::fprintf(stderr, "usage: mpirun -np N bench_allreduce [--max-floats N] [--reps R] [--check-only]\n");
      return 2;
    }
  }
  try {
    ProcessGroup& pg = world();
    if (pg.size() < 2) {
      std::fprintf(stderr, "bench_allreduce: one process (%s): start it with mpirun -np 2 or more\n", pg.kind());
      return 1;
    }
    const int checked = check(pg);
    if (pg.rank() == 0)
      std::fprintf(stderr, "bench_allreduce: %d sizes checked exact on %d ranks (%s; sums and means, float and double)\n",
                   checked, pg.size(), pg.kind());
    if (check_only) return 0;
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
