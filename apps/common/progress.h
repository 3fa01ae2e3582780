// progress.h: a progress bar on stderr for long work (training epochs, inference over a split).
//
// On a terminal one line is redrawn in place, at most ~10 times a second:
//   train epoch 3  [##########..........]  512/1024  48.3 it/s  0:10 left 0:11  loss 0.412
// When stderr is not a TTY (CI logs, `2> file`) it prints a plain line every
// 10% instead, so logs stay short and readable. finish() (or the destructor)
// prints the final line: "train epoch 3: 1024/1024 in 0:21 (48.3 it/s)"; a bar destroyed by an
// error on its way out says "stopped at 12/1024 after 0:03" instead.
//
// In a data-parallel run (mpirun) only rank 0 draws: the other ranks' bars in Auto mode are silent,
// so N ranks do not print N copies of every line.
//
// Single-threaded: call update()/advance() from the thread that owns the bar.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>

namespace nimbus {

class Progress {
 public:
  enum class Mode { Auto, Tty, Lines, Off };  // Auto: Tty when the stream is a terminal; Off on ranks > 0

  // total <= 0 means unknown: no bar and no ETA, just counts and rate.
  Progress(std::string label, int64_t total, std::FILE* out = stderr, Mode mode = Mode::Auto,
           std::string unit = "it");
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void update(int64_t done);        // absolute count
  void advance(int64_t n = 1) { update(done_ + n); }
  void set_note(std::string note);  // shown after the timing, e.g. "loss 0.412"
  void finish();                    // final line; idempotent. Destroyed unfinished by an exception, the
                                    // bar ends "label: stopped at done/total after 0:14" instead.

  int64_t done() const { return done_; }

 private:
  using Clock = std::chrono::steady_clock;
  double elapsed() const;
  std::string status_line() const;
  void draw(bool force);
  void end(bool stopped);

  std::string label_, unit_, note_;
  int64_t total_, done_ = 0;
  std::FILE* out_;
  bool tty_, off_, finished_ = false;
  Clock::time_point start_, last_draw_;
  int last_decile_ = -1;
  int uncaught_at_start_ = std::uncaught_exceptions();  // a bar made during unwinding still ends well
  size_t last_width_ = 0;
};

// Helpers, public for the tests and for apps that print their own summaries.
std::string format_duration(double seconds);                  // "0:07", "12:03", "1:02:03"
std::string progress_bar(int64_t done, int64_t total, int width);  // "[####......]"

}  // namespace nimbus
