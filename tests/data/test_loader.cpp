// test_loader.cpp: the streaming loader: epoch size and order, reshuffling
// from a seed (same seed and any thread count -> same batches), bounded
// prefetch, worker errors reaching the consumer, clean shutdown mid-epoch, and
// SEN12MS-CR triplets from disk.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>

#include "data/loader.h"
#include "data/sen12mscr.h"
#include "tests/common/check.h"
#include "tests/data/data_test_util.h"

using namespace nimbus;
using namespace nimbus::data;
using namespace nimbus::test;

namespace {

// Sample i: field "x" (2, 3) = {i, u, u, u, u, u} with u from the sample's Rng.
SampleFn toy(std::atomic<int>* calls = nullptr, int sleep_ms = 0) {
  return [calls, sleep_ms](size_t i, Rng& rng) {
    if (calls) ++*calls;
    if (sleep_ms) std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
    Sample s;
    s.path = str("toy/", i);
    s.label = int64_t(i % 3);
    std::vector<float> v(6, float(rng.uniform()));
    v[0] = float(i);
    s.add("x", Shape{2, 3}, v);
    return s;
  };
}

struct Seen {
  std::vector<size_t> indices;
  std::vector<float> values;
};

Seen run(size_t n, LoaderOptions o, int batches) {
  Loader l(n, toy(), o);
  Seen s;
  for (int b = 0; b < batches; ++b) {
    Batch bt = l.next();
    s.indices.insert(s.indices.end(), bt.indices.begin(), bt.indices.end());
    auto v = bt["x"].to_vector();
    s.values.insert(s.values.end(), v.begin(), v.end());
  }
  return s;
}

}  // namespace

TEST_CASE("loader: epochs of floor(N/B) batches, reshuffled each epoch, in order") {
  const LoaderOptions o{.batch_size = 4, .threads = 3, .prefetch = 5, .seed = 11};
  Loader l(23, toy(), o);
  REQUIRE(l.batches_per_epoch() == 5);
  std::vector<std::vector<size_t>> epochs(3);
  for (int e = 0; e < 3; ++e)
    for (size_t b = 0; b < 5; ++b) {
      Batch bt = l.next();
      CHECK(bt.epoch == e);
      CHECK(bt.step == b);
      REQUIRE(bt["x"].shape() == Shape{4, 2, 3});
      auto v = bt["x"].to_vector();
      for (size_t k = 0; k < 4; ++k) {
        CHECK(v[k * 6] == float(bt.indices[k]));  // row k is sample indices[k]
        CHECK(bt.labels[k] == int64_t(bt.indices[k] % 3));
        CHECK(bt.paths[k] == str("toy/", bt.indices[k]));
      }
      epochs[size_t(e)].insert(epochs[size_t(e)].end(), bt.indices.begin(), bt.indices.end());
    }
  for (int e = 0; e < 3; ++e) {
    auto order = Loader::epoch_order(23, 11, e, true);
    CHECK(epochs[size_t(e)] == std::vector<size_t>(order.begin(), order.begin() + 20));  // remainder dropped
    CHECK(std::set<size_t>(epochs[size_t(e)].begin(), epochs[size_t(e)].end()).size() == 20);
  }
  CHECK(epochs[0] != epochs[1]);
  CHECK(epochs[1] != epochs[2]);
  auto sorted = Loader::epoch_order(23, 11, 0, true);
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted == Loader::epoch_order(23, 11, 0, false));  // a permutation of 0..22
}

// Gradient accumulation in groups of 3 batches: of an epoch's 7 batches, the 7th makes no whole group
// and is never made (no sample of it decoded, here with no shuffle: samples 12 and 13); the batches
// handed out are the ungrouped loader's, less each epoch's last, with the same values. An epoch shorter
// than a group is left whole.
TEST_CASE("loader: with groups, an epoch's batches after its last whole group are never made") {
  std::atomic<int> calls{0};
  std::vector<int> made(15, 0);  // per sample index
  std::mutex mu;
  const SampleFn counting = [&](size_t i, Rng& rng) {
    {
      std::lock_guard<std::mutex> lk(mu);
      ++made[i];
    }
    return toy(&calls)(i, rng);
  };
  LoaderOptions o{.batch_size = 2, .threads = 2, .prefetch = 3, .seed = 8, .shuffle = false};
  o.group = 3;
  const Seen whole = run(15, LoaderOptions{.batch_size = 2, .threads = 1, .prefetch = 1, .seed = 8, .shuffle = false},
                         3 * 7);
  {
    Loader l(15, counting, o);
    CHECK(l.batches_per_epoch() == 7);
    CHECK(l.batches_taken_per_epoch() == 6);
    for (int e = 0; e < 3; ++e)
      for (size_t b = 0; b < 6; ++b) {
        Batch bt = l.next();
        CHECK(bt.epoch == e);
        CHECK(bt.step == b);
        const size_t w = size_t(e) * 7 + b;  // the ungrouped loader's batch
        CHECK(bt.indices == std::vector<size_t>(whole.indices.begin() + std::ptrdiff_t(2 * w),
                                                whole.indices.begin() + std::ptrdiff_t(2 * w + 2)));
        const std::vector<float> v = bt["x"].to_vector();
        CHECK(v == std::vector<float>(whole.values.begin() + std::ptrdiff_t(12 * w),
                                      whole.values.begin() + std::ptrdiff_t(12 * w + 12)));
      }
  }  // the workers stop: made[] is final
  CHECK(made[12] == 0);
  CHECK(made[13] == 0);
  CHECK(made[14] == 0);  // the remainder of 15 samples in batches of 2
  CHECK(made[0] >= 3);   // every epoch's first batch (and some of the fourth's, prefetched)
  LoaderOptions longer = o;
  longer.group = 8;
  CHECK(Loader(15, toy(), longer).batches_taken_per_epoch() == 7);
  LoaderOptions none = o;
  none.group = 0;
  CHECK_THROWS_WITH_AS(Loader(15, toy(), none), doctest::Contains("group (0) must be at least 1"), Error);
}

TEST_CASE("loader: same seed -> same batches, whatever the thread count, new seed -> new order") {
  LoaderOptions o{.batch_size = 5, .threads = 1, .prefetch = 1, .seed = 3};
  Seen a = run(37, o, 16);  // more than two epochs
  o.threads = 4;
  o.prefetch = 6;
  Seen b = run(37, o, 16);
  CHECK(a.indices == b.indices);
  CHECK(a.values == b.values);  // per-sample randomness too
  o.seed = 4;
  Seen c = run(37, o, 16);
  CHECK(a.indices != c.indices);
  o.shuffle = false;
  Seen d = run(37, o, 2);
  CHECK(d.indices == std::vector<size_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  o.shuffle = true;
  o.seed = 3;
  o.first_epoch = 1;  // resuming at epoch 1 gives what the uninterrupted run gave there
  Seen e = run(37, o, 7);
  CHECK(e.indices == std::vector<size_t>(a.indices.begin() + 35, a.indices.begin() + 70));
}

TEST_CASE("loader: memory is bounded by the prefetch depth") {
  std::atomic<int> calls{0};
  const LoaderOptions o{.batch_size = 2, .threads = 3, .prefetch = 3};
  Loader l(1000000, toy(&calls), o);  // a huge dataset: nothing is read ahead beyond 3 batches
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(calls.load() <= 3 * 2);
  for (int i = 0; i < 20; ++i) {
    l.next();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // a slow consumer
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK(calls.load() <= (20 + 3) * 2);
  CHECK(l.max_outstanding() <= 3);
  CHECK(l.max_outstanding() >= 1);
}

TEST_CASE("loader: a worker's error reaches the consumer naming the file, shutdown mid-epoch is clean") {
  const LoaderOptions o{.batch_size = 2, .threads = 2, .shuffle = false};
  SampleFn bad = [](size_t i, Rng& rng) {
    if (i == 5) throw Error("geotiff: /data/ROIs1158_spring_s1_1_p5.tif: cannot decode strip 3");
    return toy()(i, rng);
  };
  {
    Loader l(10, bad, o);
    l.next();  // samples 0, 1
    l.next();  // samples 2, 3
    CHECK_THROWS_WITH_AS(l.next(), doctest::Contains("ROIs1158_spring_s1_1_p5.tif"), Error);
    CHECK(l.next().indices == std::vector<size_t>{6, 7});  // later batches still come
  }
  SampleFn std_error = [](size_t, Rng&) -> Sample { throw std::runtime_error("disk on fire"); };
  {
    Loader l(10, std_error, o);
    CHECK_THROWS_WITH_AS(l.next(), doctest::Contains("sample 0 (epoch 0): disk on fire"), Error);
  }
  // Destroyed with slow workers mid-batch, before and after taking a batch: must not hang or leak.
  auto t0 = std::chrono::steady_clock::now();
  { Loader l(100, toy(nullptr, 20), o); }
  {
    Loader l(100, toy(nullptr, 5), o);
    l.next();
  }
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
  CHECK_THROWS_WITH_AS(Loader(3, toy(), LoaderOptions{}), doctest::Contains("no full batch"), Error);
  LoaderOptions zero;
  zero.threads = 0;
  CHECK_THROWS_AS(Loader(100, toy(), zero), Error);
  // Samples that disagree on their fields.
  SampleFn ragged = [](size_t i, Rng&) {
    Sample s;
    s.path = str("r", i);
    s.add("x", Shape{int64_t(1 + i % 2)}, std::vector<float>(1 + i % 2, 0.f));
    return s;
  };
  Loader l(4, ragged, o);
  CHECK_THROWS_WITH_AS(l.next(), doctest::Contains("r1"), Error);
  // The same count in another shape (a 2 x 3 image turned a quarter is 3 x 2): refused, not copied in.
  SampleFn turned = [](size_t i, Rng&) {
    Sample s;
    s.path = str("t", i);
    s.add("x", i % 2 ? Shape{3, 2} : Shape{2, 3}, std::vector<float>(6, 0.f));
    return s;
  };
  Loader lt(4, turned, o);
  CHECK_THROWS_WITH_AS(lt.next(), doctest::Contains("t1): 'x' is (3,2) but the batch holds (2,2,3)"), Error);
}

TEST_CASE("loader: one batch per epoch, many threads: every epoch's order is found (regression)") {
  // Workers build the batches of several epochs at once here. A worker that got
  // to an older epoch's order late used to insert it into the bounded cache of
  // orders, see it evicted at once (oldest first) and throw map::at.
  auto fn = [](size_t index, Rng&) {
    Sample s;
    s.add("x", Shape{1}, {float(index)});
    return s;
  };
  const LoaderOptions o{.batch_size = 2, .threads = 4, .prefetch = 16, .seed = 3};
  Loader l(2, fn, o);
  for (int k = 0; k < 400; ++k) {
    Batch b = l.next();
    REQUIRE(b.epoch == k);
    CHECK(b["x"].to_vector() == std::vector<float>{float(b.indices[0]), float(b.indices[1])});
  }
}

TEST_CASE("loader: SEN12MS-CR triplets from disk, cropped and augmented") {
  TempDir tmp;
  for (int p = 1; p <= 6; ++p) {
    for (const char* mod : {"s1", "s2", "s2_cloudy"}) {
      const std::string pre = str("ROIs1158_spring_", mod);
      fs::create_directories(tmp.path / pre / str(mod, "_3"));
      Raster r = std::string(mod) == "s1" ? random_raster(2, 32, 32, -30, 0, uint64_t(p), SampleType::Float32)
                                          : random_raster(13, 32, 32, 0, 12000, uint64_t(p));
      WriteOptions wo;
      wo.type = r.type;
      write_geotiff((tmp.path / pre / str(mod, "_3") / str(pre, "_3_p", p, ".tif")).string(), r, wo);
    }
  }
  Sen12mscrIndex idx = scan_sen12mscr(tmp.path.string());
  REQUIRE(idx.triplets.size() == 6);
  TripletSampleOptions so;
  so.augment.crop = 16;
  const LoaderOptions o{.batch_size = 4, .threads = 2, .seed = 5};
  auto fn = sen12mscr_sample_fn(idx.triplets, so);
  Loader a(idx.triplets.size(), fn, o), b(idx.triplets.size(), fn, o);
  for (int k = 0; k < 3; ++k) {
    Batch x = a.next(), y = b.next();
    CHECK(x["cloudy"].shape() == Shape{4, 13, 16, 16});
    CHECK(x["target"].shape() == Shape{4, 13, 16, 16});
    CHECK(x["sar"].shape() == Shape{4, 2, 16, 16});
    CHECK(!x.has("mask"));
    CHECK(x.indices == y.indices);
    CHECK(x["cloudy"].to_vector() == y["cloudy"].to_vector());
    CHECK(x["sar"].to_vector() == y["sar"].to_vector());
    // Row k of the batch is exactly load_triplet with that sample's own Rng.
    Rng rng = Loader::sample_rng(5, x.epoch, x.indices[1]);
    Sample s = load_triplet(idx.triplets[x.indices[1]], rng, so);
    auto v = x["target"].to_vector();
    CHECK(std::vector<float>(v.begin() + 13 * 256, v.begin() + 2 * 13 * 256) == s.values[1]);
    CHECK(x.paths[1] == idx.triplets[x.indices[1]].s2_cloudy);
  }
  Batch z = a.next();
  CHECK_THROWS_WITH_AS(z["nope"], doctest::Contains("no tensor 'nope'"), Error);
}

TEST_CASE("loader: ranks share each global batch, disjointly, as one loader with the global batch") {
  // 3 ranks of batch 2 against one loader of batch 6: 23 samples make 3 global batches per epoch.
  const size_t n = 23;
  LoaderOptions one{.batch_size = 6, .threads = 2, .prefetch = 2, .seed = 5};
  const Seen whole = run(n, one, 2 * 3);  // two epochs
  std::vector<Seen> parts;
  for (int r = 0; r < 3; ++r) {
    LoaderOptions o{.batch_size = 2, .threads = 1, .prefetch = 2, .seed = 5};
    o.rank = r;
    o.ranks = 3;
    CHECK(Loader(n, toy(), o).batches_per_epoch() == 3);
    parts.push_back(run(n, o, 2 * 3));
  }
  // Global batch g is rank 0's g-th batch, then rank 1's, then rank 2's: the same samples, values
  // included (each sample's Rng depends on the sample, not on the rank).
  for (size_t g = 0; g < 6; ++g)
    for (int r = 0; r < 3; ++r)
      for (size_t k = 0; k < 2; ++k) {
        CHECK(parts[size_t(r)].indices[g * 2 + k] == whole.indices[g * 6 + size_t(r) * 2 + k]);
        for (size_t v = 0; v < 6; ++v)
          CHECK(parts[size_t(r)].values[(g * 2 + k) * 6 + v] == whole.values[(g * 6 + size_t(r) * 2 + k) * 6 + v]);
      }
  // Within an epoch no sample is seen twice across the ranks.
  std::set<size_t> epoch0;
  for (int r = 0; r < 3; ++r)
    for (size_t i = 0; i < 6; ++i) CHECK(epoch0.insert(parts[size_t(r)].indices[i]).second);
  CHECK(epoch0.size() == 18);
  LoaderOptions bad{.batch_size = 2};
  bad.rank = 3;
  bad.ranks = 3;
  CHECK_THROWS_WITH_AS(Loader(n, toy(), bad), doctest::Contains("rank 3 of 3 ranks"), Error);
  LoaderOptions big{.batch_size = 8};
  big.ranks = 3;
  CHECK_THROWS_WITH_AS(Loader(n, toy(), big), doctest::Contains("on each of 3 ranks"), Error);
}
