// temp_files.cpp: the table of live temporary files and the signal handlers (see temp_files.h).
#include "engine/io/temp_files.h"

#include <dirent.h>
#include <fcntl.h>
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

// The NewFolder: the same states as a slot.
constexpr size_t kNameMax = 256;
std::atomic<int> folder_state;
char folder_path[kPathMax];
char folder_lock[kNameMax];

// Async-signal-safe string compare (strcmp is not on POSIX's list before 2016).
bool same(const char* a, const char* b) {
  while (*a && *a == *b) ++a, ++b;
  return *a == *b;
}

// Removes `dir` if it holds nothing but `lock` (removed first). Only system calls: open, getdents64,
// unlinkat, close, rmdir. Any doubt (an error reading the folder) keeps the folder.
void remove_if_only_lock(const char* dir, const char* lock) {
  const int fd = ::open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  alignas(8) char buf[4096];
  bool only_lock = true;
  for (;;) {
    const ssize_t n = ::getdents64(fd, buf, sizeof buf);
    if (n < 0) only_lock = false;
    if (n <= 0) break;
    for (ssize_t at = 0; at < n;) {
      const auto* e = reinterpret_cast<const struct dirent64*>(buf + at);
      if (!same(e->d_name, ".") && !same(e->d_name, "..") && !same(e->d_name, lock)) only_lock = false;
      at += e->d_reclen;
    }
  }
  if (only_lock) ::unlinkat(fd, lock, 0);  // may be gone already: rmdir decides
  ::close(fd);
  if (only_lock) ::rmdir(dir);
}

void on_signal(int sig) {
  for (int i = 0; i < kSlots; ++i) {
    int held = 2;  // taken from 2 to 3 first: a writer's thread can then neither free nor refill the slot
    if (state[i].compare_exchange_strong(held, 3, std::memory_order_acquire)) ::unlink(paths[i]);
  }
  int held = 2;  // after the temporaries: they no longer count as contents
  if (folder_state.compare_exchange_strong(held, 3, std::memory_order_acquire))
    remove_if_only_lock(folder_path, folder_lock);
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

NewFolder::NewFolder(const std::string& dir, const std::string& lock_name) {
  if (dir.size() >= kPathMax || lock_name.size() >= kNameMax || lock_name.empty()) return;
  int expected = 0;
  if (!folder_state.compare_exchange_strong(expected, 1, std::memory_order_acquire)) return;
  std::memcpy(folder_path, dir.c_str(), dir.size() + 1);
  std::memcpy(folder_lock, lock_name.c_str(), lock_name.size() + 1);
  folder_state.store(2, std::memory_order_release);
  held_ = true;
}

NewFolder::~NewFolder() {
  int held = 2;
  if (held_) folder_state.compare_exchange_strong(held, 0, std::memory_order_release);
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
