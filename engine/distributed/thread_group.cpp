// thread_group.cpp: the threads-as-ranks process group (see thread_group.h). Every collective is
// publish (each rank's pointer in its slot), meet, work (each rank reads the others' data and
// writes only its own), meet: the second meeting keeps a fast rank from overwriting data that a slow
// one still reads.
#include "engine/distributed/thread_group.h"

#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "kernels/common/error.h"

namespace nimbus {

namespace {

// What the ranks share: a barrier that can be broken, and one pointer slot per rank.
class Wires {
 public:
  explicit Wires(int n) : n_(n), slots_(size_t(n)) {}
  int size() const { return n_; }
  void*& slot(int r) { return slots_[size_t(r)]; }

  // Returns once every rank has arrived; throws when a rank has failed.
  void meet() {
    std::unique_lock<std::mutex> lock(m_);
    if (broken_) throw Error("thread group: another rank failed");
    const long gen = generation_;
    if (++arrived_ == n_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return generation_ != gen || broken_; });
    if (broken_) throw Error("thread group: another rank failed");
  }
  void fail() {
    std::lock_guard<std::mutex> lock(m_);
    broken_ = true;
    cv_.notify_all();
  }

 private:
  const int n_;
  std::vector<void*> slots_;
  std::mutex m_;
  std::condition_variable cv_;
  int arrived_ = 0;
  long generation_ = 0;
  bool broken_ = false;
};

class ThreadGroup final : public ProcessGroup {
 public:
  ThreadGroup(Wires& w, int rank) : w_(w), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return w_.size(); }
  const char* kind() const override { return "threads"; }
  void all_reduce_sum(float* data, size_t n) override { reduce(data, n); }
  void all_reduce_sum(double* data, size_t n) override { reduce(data, n); }
  void broadcast(void* data, size_t bytes, int root) override {
    NIMBUS_CHECK(root >= 0 && root < size(), "broadcast: root ", root, " in a group of ", size());
    w_.slot(rank_) = data;
    w_.meet();
    if (rank_ != root) std::memcpy(data, w_.slot(root), bytes);
    w_.meet();
  }
  void barrier() override { w_.meet(); }

 private:
  template <typename T>
  void reduce(T* data, size_t n) {
    w_.slot(rank_) = data;
    w_.meet();
    std::vector<T> sum(n);
    for (size_t i = 0; i < n; ++i) {
      T s = static_cast<const T*>(w_.slot(0))[i];
      for (int r = 1; r < size(); ++r) s += static_cast<const T*>(w_.slot(r))[i];
      sum[i] = s;
    }
    w_.meet();  // every rank has read every rank's data
    std::memcpy(data, sum.data(), n * sizeof(T));
  }

  Wires& w_;
  const int rank_;
};

}  // namespace

void run_ranks(int n, const std::function<void(ProcessGroup& group)>& body) {
  NIMBUS_CHECK(n >= 1, "run_ranks: ", n, " ranks");
  Wires wires(n);
  std::mutex m;
  std::exception_ptr first;  // the failure that broke the group, not the others' "another rank failed"
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      ThreadGroup g(wires, r);
      try {
        body(g);
      } catch (...) {
        {
          std::lock_guard<std::mutex> lock(m);
          if (!first) first = std::current_exception();
        }
        wires.fail();
      }
    });
  for (std::thread& t : threads) t.join();
  if (first) std::rethrow_exception(first);
}

}  // namespace nimbus
