// loader.cpp: the prefetching batch loader; see loader.h for the contract.
//
// Workers claim global batch numbers g = 0, 1, 2, ... (epoch = g / batches per
// epoch) only while g < consumed + prefetch, make the batch outside the lock,
// and park it in `ready_`; next() waits for batch `consumed_` exactly, so the
// output order never depends on thread timing.
#include "data/loader.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "kernels/common/error.h"

namespace nimbus::data {

void Sample::add(const std::string& name, const Shape& shape, std::vector<float> v) {
  NIMBUS_CHECK(size_t(shape.numel()) == v.size(), "sample ", path, ": '", name, "' has ", v.size(),
               " values but shape ", shape.str());
  names.push_back(name);
  shapes.push_back(shape);
  values.push_back(std::move(v));
}

const Tensor& Batch::operator[](const std::string& name) const {
  for (size_t k = 0; k < names.size(); ++k)
    if (names[k] == name) return tensors[k];
  std::string have;
  for (auto& n : names) have += (have.empty() ? "" : ", ") + n;
  throw Error(str("batch: no tensor '", name, "' (has: ", have, ")"));
}

bool Batch::has(const std::string& name) const { return std::find(names.begin(), names.end(), name) != names.end(); }

std::vector<size_t> Loader::epoch_order(size_t n, uint64_t seed, int epoch, bool shuffle) {
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t(0));
  if (!shuffle) return order;
  Rng rng(seed ^ (0xA24BAED4963EE407ull * (uint64_t(epoch) + 1)));
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);  // Fisher-Yates
  return order;
}

Rng Loader::sample_rng(uint64_t seed, int epoch, size_t index) {
  // Rng seeds through splitmix64, so a simple injective mix of the three is enough.
  return Rng(seed * 0x9E3779B97F4A7C15ull + (uint64_t(epoch) << 40) + uint64_t(index) + 1);
}

Loader::Loader(size_t num_samples, SampleFn fn, LoaderOptions options)
    : n_(num_samples), fn_(std::move(fn)), opt_(options) {
  NIMBUS_CHECK(opt_.batch_size > 0, "loader: batch size must be positive");
  NIMBUS_CHECK(opt_.threads >= 1 && opt_.prefetch >= 1, "loader: threads (", opt_.threads, ") and prefetch (",
               opt_.prefetch, ") must be at least 1");
  NIMBUS_CHECK(opt_.ranks >= 1 && opt_.rank >= 0 && opt_.rank < opt_.ranks, "loader: rank ", opt_.rank, " of ",
               opt_.ranks, " ranks");
  batches_per_epoch_ = n_ / (opt_.batch_size * size_t(opt_.ranks));
  NIMBUS_CHECK(batches_per_epoch_ > 0, "loader: ", n_, " samples make no full batch of ", opt_.batch_size,
               opt_.ranks > 1 ? str(" on each of ", opt_.ranks, " ranks") : std::string());
  NIMBUS_CHECK(opt_.group >= 1, "loader: group (", opt_.group, ") must be at least 1");
  batches_taken_ = batches_per_epoch_ >= opt_.group ? batches_per_epoch_ / opt_.group * opt_.group : batches_per_epoch_;
  NIMBUS_CHECK(fn_ != nullptr, "loader: no sample function");
  for (int t = 0; t < opt_.threads; ++t) threads_.emplace_back([this] { work(); });
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_work_.notify_all();
  cv_ready_.notify_all();
  for (auto& t : threads_) t.join();
}

size_t Loader::max_outstanding() const {
  std::lock_guard<std::mutex> lk(mu_);
  return max_outstanding_;
}

std::shared_ptr<const std::vector<size_t>> Loader::order_of(int epoch) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = orders_.find(epoch);
    if (it != orders_.end()) return it->second;
  }
  // Two workers may both compute it; the result is the same, and it is cheap next to a batch.
  auto order = std::make_shared<const std::vector<size_t>>(epoch_order(n_, opt_.seed, epoch, opt_.shuffle));
  std::lock_guard<std::mutex> lk(mu_);
  orders_.emplace(epoch, order);
  // Keep the newest few. Workers run several epochs ahead when an epoch is one
  // batch, so this epoch may itself be the oldest and go at once: return the
  // order computed here, never a lookup that may miss.
  while (orders_.size() > size_t(std::max(3, opt_.prefetch + 1))) orders_.erase(orders_.begin());
  return order;
}

namespace {
// (B, dims...) from a sample's (dims...).
Shape batched(const Shape& s, size_t B) {
  std::vector<int64_t> dims(size_t(s.ndim()) + 1);
  dims[0] = int64_t(B);
  for (int d = 0; d < s.ndim(); ++d) dims[size_t(d) + 1] = s[d];
  return Shape(dims);
}
}  // namespace

Batch Loader::make_batch(uint64_t g) {
  Batch b;
  b.epoch = opt_.first_epoch + int(g / batches_taken_);
  b.step = size_t(g % batches_taken_);
  auto order = order_of(b.epoch);
  const size_t B = opt_.batch_size;
  for (size_t i = 0; i < B; ++i) {
    const size_t index = (*order)[(b.step * size_t(opt_.ranks) + size_t(opt_.rank)) * B + i];
    Sample s;
    try {
      Rng rng = sample_rng(opt_.seed, b.epoch, index);
      s = fn_(index, rng);
    } catch (const std::exception& e) {
      throw Error(str("loader: sample ", index, " (epoch ", b.epoch, "): ", e.what()));
    }
    if (i == 0) {  // the first sample fixes the batch's fields
      b.names = s.names;
      for (size_t k = 0; k < s.names.size(); ++k) {
        NIMBUS_CHECK(s.shapes[k].ndim() < Shape::kMaxDims, "loader: '", s.names[k], "' has too many dims");
        b.tensors.push_back(Tensor::empty(batched(s.shapes[k], B)));
      }
    }
    NIMBUS_CHECK(s.names == b.names, "loader: sample ", index, " (", s.path, ") has other fields than the batch's first");
    for (size_t k = 0; k < s.names.size(); ++k) {
      const size_t per = s.values[k].size();
      // The shape, not only the count: a (13, 32, 64) tile turned a quarter is (13, 64, 32), the same
      // count, and would be copied in as the other layout.
      NIMBUS_CHECK(batched(s.shapes[k], B) == b.tensors[k].shape() && int64_t(per) * int64_t(B) == b.tensors[k].numel(),
                   "loader: sample ", index, " (", s.path, "): '", s.names[k], "' is ", s.shapes[k].str(),
                   " but the batch holds ", b.tensors[k].shape().str());
      std::memcpy(b.tensors[k].data() + i * per, s.values[k].data(), per * sizeof(float));
    }
    b.labels.push_back(s.label);
    b.indices.push_back(index);
    b.paths.push_back(std::move(s.path));
  }
  return b;
}

void Loader::work() {
  for (;;) {
    uint64_t g;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_work_.wait(lk, [&] { return stop_ || next_claim_ < consumed_ + uint64_t(opt_.prefetch); });
      if (stop_) return;
      g = next_claim_++;
      max_outstanding_ = std::max(max_outstanding_, size_t(next_claim_ - consumed_));
    }
    Slot slot;
    try {
      slot.batch = make_batch(g);
    } catch (...) {
      slot.error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      ready_.emplace(g, std::move(slot));
    }
    cv_ready_.notify_all();
  }
}

Batch Loader::next() {
  Slot slot;
  {
    std::unique_lock<std::mutex> lk(mu_);
    cv_ready_.wait(lk, [&] { return ready_.count(consumed_) > 0; });
    auto it = ready_.find(consumed_);
    slot = std::move(it->second);
    ready_.erase(it);
    ++consumed_;
  }
  cv_work_.notify_all();
  if (slot.error) std::rethrow_exception(slot.error);
  return std::move(slot.batch);
}

}  // namespace nimbus::data
