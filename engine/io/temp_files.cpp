// temp_files.cpp: the table of live temporary files and the signal handlers (see temp_files.h).
#include "engine/io/temp_files.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>

namespace nimbus {

namespace {

constexpr int kSlots = 64;
constexpr size_t kPathMax = 4096;

// A slot is free (0), being filled (1), holds a path the handler may unlink (2), or is being unlinked by
// the handler (3: the process is about to die of the signal; the slot is never freed again).
std::atomic<int> state[kSlots];
char paths[kSlots][kPathMax];

void on_signal(int sig) {
  for (int i = 0; i < kSlots; ++i) {
    int held = 2;  // taken from 2 to 3 first: a writer's thread can then neither free nor refill the slot
    if (state[i].compare_exchange_strong(held, 3, std::memory_order_acquire)) ::unlink(paths[i]);
  }
  // Die of the same signal: the default action, re-raised (it is blocked until this handler returns).
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

}  // namespace

TempFile::TempFile(const std::string& path) {
  if (path.size() >= kPathMax) return;
  for (int i = 0; i < kSlots; ++i) {
    int expected = 0;
    if (!state[i].compare_exchange_strong(expected, 1, std::memory_order_acquire)) continue;
    std::memcpy(paths[i], path.c_str(), path.size() + 1);
    state[i].store(2, std::memory_order_release);
    slot_ = i;
    return;
  }
}

TempFile::~TempFile() {
  int held = 2;  // not if the handler holds it (3): the process is dying of the signal anyway
  if (slot_ >= 0) state[slot_].compare_exchange_strong(held, 0, std::memory_order_release);
}

void remove_temp_files_on_signals() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
      struct sigaction old {};
      if (::sigaction(sig, nullptr, &old) != 0 || old.sa_handler != SIG_DFL) continue;
      struct sigaction sa {};
      sa.sa_handler = on_signal;
      sigemptyset(&sa.sa_mask);
      ::sigaction(sig, &sa, nullptr);
    }
  });
}

}  // namespace nimbus
