/* tsan_ignore.h: hides the emulator models' bookkeeping from ThreadSanitizer for a scope. The fibers
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
#endif

namespace nimbus::emu {

struct TsanIgnore {
#ifdef EMU_TSAN
  TsanIgnore() { __tsan_ignore_thread_begin(); }
  ~TsanIgnore() { __tsan_ignore_thread_end(); }
  static void pause() { __tsan_ignore_thread_end(); }
  static void resume() { __tsan_ignore_thread_begin(); }
#else
  ~TsanIgnore() {}  // user-provided: a guard, not an unused variable
  static void pause() {}
  static void resume() {}
#endif
};

}  // namespace nimbus::emu
