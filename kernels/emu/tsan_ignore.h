/* tsan_ignore.h: hides the emulator models' bookkeeping from ThreadSanitizer for a scope (and marks a
 * model's synchronisation: tsan_release / tsan_acquire). The fibers
 * of one OS thread share that bookkeeping (containers keyed by address, per block) and never run at
 * once, which TSan, seeing one thread switch stacks, would report as races (tsan_check.sh). EMU_TSAN is
 * set by the TSan build (or by the compiler's __SANITIZE_THREAD__). */
#pragma once

#if defined(__SANITIZE_THREAD__) && !defined(EMU_TSAN)
#define EMU_TSAN 1
#endif
#ifdef EMU_TSAN
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
extern "C" void AnnotateIgnoreSyncBegin(const char* file, int line);
extern "C" void AnnotateIgnoreSyncEnd(const char* file, int line);
#endif

namespace nimbus::emu {

#ifdef EMU_TSAN
// Scopes open in the running fiber (no scope spans a switch to another fiber, so one count per OS
// thread is the running fiber's). Changed only while ignoring: TSan never sees it.
inline thread_local int tsan_ignore_depth = 0;
inline thread_local int tsan_ignore_sync_depth = 0;  // TsanIgnoreSync scopes among them
#endif

struct TsanIgnore {
#ifdef EMU_TSAN
  TsanIgnore() { __tsan_ignore_thread_begin(), ++tsan_ignore_depth; }
  ~TsanIgnore() { --tsan_ignore_depth, __tsan_ignore_thread_end(); }
  static void pause() { __tsan_ignore_thread_end(); }
  static void resume() { __tsan_ignore_thread_begin(); }
  // A fiber leaving for good from inside scopes (a kernel fault found by the model) ends them: TSan
  // refuses to destroy a fiber that still ignores ("finished with ignores enabled").
  static void end_all() {
    while (tsan_ignore_sync_depth > 0) --tsan_ignore_sync_depth, AnnotateIgnoreSyncEnd(__FILE__, __LINE__);
    while (tsan_ignore_depth > 0) --tsan_ignore_depth, __tsan_ignore_thread_end();
  }
#else
  ~TsanIgnore() {}  // user-provided: a guard, not an unused variable
  static void pause() {}
  static void resume() {}
  static void end_all() {}
#endif
};

// TsanIgnore, and the locks taken in the scope order nothing for TSan, when `on`: a CUDA thread's
// lookup in a registry the host guards with a mutex would otherwise order its block after every block
// that looked up before it (the mutex still excludes; only TSan's view changes).
struct TsanIgnoreSync {
#ifdef EMU_TSAN
  explicit TsanIgnoreSync(bool on) : on_(on) {
    if (on_)
      __tsan_ignore_thread_begin(), ++tsan_ignore_depth, AnnotateIgnoreSyncBegin(__FILE__, __LINE__),
          ++tsan_ignore_sync_depth;
  }
  ~TsanIgnoreSync() {
    if (on_)
      --tsan_ignore_sync_depth, AnnotateIgnoreSyncEnd(__FILE__, __LINE__), --tsan_ignore_depth,
          __tsan_ignore_thread_end();
  }
  TsanIgnoreSync(const TsanIgnoreSync&) = delete;
  TsanIgnoreSync& operator=(const TsanIgnoreSync&) = delete;

 private:
  bool on_;
#else
  explicit TsanIgnoreSync(bool) {}
  ~TsanIgnoreSync() {}
#endif
};

// A release / acquire pair on an object of the model (an mbarrier's record): what one CUDA thread did
// before its release happens before what another does after its acquire. No-ops without TSan.
#ifdef EMU_TSAN
inline void tsan_release(void* sync) { __tsan_release(sync); }
inline void tsan_acquire(void* sync) { __tsan_acquire(sync); }
#else
inline void tsan_release(void*) {}
inline void tsan_acquire(void*) {}
#endif

}  // namespace nimbus::emu
