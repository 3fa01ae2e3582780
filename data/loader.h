// loader.h: the streaming data loader: background threads read, decode, crop
// and augment samples into a bounded prefetch queue of ready batches.
//
// The per-sample work is a callback (SampleFn) so the SEN12MS-CR triplet
// loader and the EuroSAT classifier loader share this machinery. A sample is a
// set of named float arrays; a Batch stacks them into engine Tensors (B, ...).
//
// Order and randomness: epoch e visits the samples in epoch_order(n, seed, e)
// (a fresh shuffle each epoch; same seed -> same order), in floor(n / batch)
// batches (the remainder is dropped, as in the reference; with gradient
// accumulation, so are the batches after the last whole group of them, which
// are never made). Each sample gets
// its own Rng seeded from (seed, epoch, index), so what a sample looks like
// does not depend on which thread made it. Batches come out in order.
//
// Memory: at most `prefetch` batches exist between the workers and the
// consumer (being made or ready), whatever the dataset size; the dataset
// itself is only a list of paths. Destroying the loader mid-epoch stops the
// workers after the batch each is making. A worker's exception is handed to
// the consumer: next() rethrows it as an Error naming the sample and file.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/random.h"
#include "engine/tensor.h"

namespace nimbus::data {

// One sample: named arrays, each with its shape (no batch dimension).
struct Sample {
  std::vector<std::string> names;
  std::vector<Shape> shapes;
  std::vector<std::vector<float>> values;
  int64_t label = -1;  // class index, -1 when none
  std::string path;    // the sample's main file, for bookkeeping
  void add(const std::string& name, const Shape& shape, std::vector<float> v);
};

// Builds sample `index` of the dataset; rng is this sample's own generator.
using SampleFn = std::function<Sample(size_t index, Rng& rng)>;

struct Batch {
  std::vector<std::string> names;
  std::vector<Tensor> tensors;  // tensors[k] is (B, shapes[k]...) for names[k]
  std::vector<int64_t> labels;  // B entries
  std::vector<size_t> indices;  // dataset indices, B entries
  std::vector<std::string> paths;
  int epoch = 0;
  size_t step = 0;  // batch number within the epoch
  const Tensor& operator[](const std::string& name) const;  // Error when absent
  bool has(const std::string& name) const;
};

struct LoaderOptions {
  size_t batch_size = 16;
  int threads = 2;
  int prefetch = 4;  // batches made ahead; bounds memory (>= threads to keep every thread busy)
  uint64_t seed = 42;
  bool shuffle = true;  // false: 0, 1, 2, ... every epoch (evaluation)
  int first_epoch = 0;  // to resume a run
  // Data parallelism (engine/distributed/data_parallel.h): `ranks` processes share each global batch
  // of ranks x batch_size samples of the epoch's order, this one taking the rank-th slice of it. Every
  // rank then sees floor(n / (ranks x batch_size)) batches per epoch, and together they visit what
  // one process with batch ranks x batch_size would.
  int rank = 0, ranks = 1;
  // Gradient accumulation: an optimiser step takes `group` batches in turn, and an epoch's batches after
  // its last whole group are left out. They are never made (decoding them would only be thrown away):
  // next() goes from the last whole group to the next epoch. An epoch of fewer batches than a group is
  // left whole (the trainer refuses such a run with a usage error).
  size_t group = 1;
};

class Loader {
 public:
  Loader(size_t num_samples, SampleFn fn, LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  size_t batches_per_epoch() const { return batches_per_epoch_; }
  // What next() hands out of each epoch: batches_per_epoch() rounded down to whole groups.
  size_t batches_taken_per_epoch() const { return batches_taken_; }
  // The next batch; epochs follow one another without end.
  Batch next();
  // Most batches ever outstanding at once (made or being made, not yet taken).
  size_t max_outstanding() const;

  // The sample order of one epoch.
  static std::vector<size_t> epoch_order(size_t n, uint64_t seed, int epoch, bool shuffle);
  // The generator a sample gets: a function of (seed, epoch, index) only.
  static Rng sample_rng(uint64_t seed, int epoch, size_t index);

 private:
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };
  void work();
  Batch make_batch(uint64_t global_step);
  std::shared_ptr<const std::vector<size_t>> order_of(int epoch);

  const size_t n_;
  const SampleFn fn_;
  const LoaderOptions opt_;
  size_t batches_per_epoch_ = 0;
  size_t batches_taken_ = 0;  // of each epoch: whole groups

  mutable std::mutex mu_;
  std::condition_variable cv_work_, cv_ready_;
  bool stop_ = false;
  uint64_t next_claim_ = 0;  // next global batch a worker will make
  uint64_t consumed_ = 0;    // next global batch next() hands out
  size_t max_outstanding_ = 0;
  std::map<uint64_t, Slot> ready_;
  std::map<int, std::shared_ptr<const std::vector<size_t>>> orders_;  // per epoch, a few kept
  std::vector<std::thread> threads_;
};

}  // namespace nimbus::data
