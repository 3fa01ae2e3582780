// random.h: the engine's deterministic random number generator.
//
// xoshiro256** seeded through splitmix64: fast, good quality, and its whole
// state is four 64-bit words, so checkpoints can save and restore it and a
// resumed run draws exactly the numbers an uninterrupted one would.
#pragma once
#include <array>
#include <cstdint>

namespace nimbus {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0x5eed) { seed_with(seed); }
  void seed_with(uint64_t seed);
  uint64_t next_u64();
  double uniform();                        // [0, 1)
  float uniform(float lo, float hi);       // [lo, hi)
  uint64_t below(uint64_t n);              // uniform integer in [0, n), unbiased
  double normal();                         // N(0, 1), Box-Muller
  std::array<uint64_t, 4> state() const { return s_; }
  void set_state(const std::array<uint64_t, 4>& s) { s_ = s; }

 private:
  std::array<uint64_t, 4> s_{};
};

// The process-wide generator used by initialisers when none is passed.
Rng& global_rng();
void manual_seed(uint64_t seed);

}  // namespace nimbus
