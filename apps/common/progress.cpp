// progress.cpp: the stderr progress bar (see progress.h).
#include "apps/common/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <exception>

#include "engine/distributed/process_group.h"
#include "kernels/common/error.h"

namespace nimbus {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  int64_t s = int64_t(seconds + 0.5);
  char buf[48];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(s / 3600), (long long)(s / 60 % 60),
                  (long long)(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", (long long)(s / 60), (long long)(s % 60));
  return buf;
}

std::string progress_bar(int64_t done, int64_t total, int width) {
  double f = total > 0 ? std::clamp(double(done) / double(total), 0.0, 1.0) : 0.0;
  int filled = int(f * width);
  return "[" + std::string(size_t(filled), '#') + std::string(size_t(width - filled), '.') + "]";
}

Progress::Progress(std::string label, int64_t total, std::FILE* out, Mode mode, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), out_(out) {
  NIMBUS_CHECK(out_, "progress: null output stream");
  off_ = mode == Mode::Off || (mode == Mode::Auto && launched_rank() > 0);
  tty_ = mode == Mode::Tty || (mode == Mode::Auto && isatty(fileno(out_)));
  start_ = last_draw_ = Clock::now();
  draw(true);
}

// Destroyed by an exception on its way out (an error mid-run): the last line says the work stopped,
// not that it finished, just above the error's own message.
Progress::~Progress() { end(std::uncaught_exceptions() > uncaught_at_start_); }

double Progress::elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

void Progress::set_note(std::string note) { note_ = std::move(note); }

// "label  [###...]  done/total  rate  elapsed left ETA  note"
std::string Progress::status_line() const {
  double t = elapsed();
  double rate = t > 0 ? double(done_) / t : 0;
  char buf[96];
  std::string s = label_ + "  ";
  if (total_ > 0) {
    s += progress_bar(done_, total_, 20) + "  ";
    std::snprintf(buf, sizeof buf, "%lld/%lld", (long long)done_, (long long)total_);
  } else {
    std::snprintf(buf, sizeof buf, "%lld", (long long)done_);
  }
  s += buf;
  std::snprintf(buf, sizeof buf, "  %.1f %s/s  %s", rate, unit_.c_str(), format_duration(t).c_str());
  s += buf;
  if (total_ > 0 && done_ > 0 && done_ < total_) s += " left " + format_duration(double(total_ - done_) / rate);
  if (!note_.empty()) s += "  " + note_;
  return s;
}

void Progress::draw(bool force) {
  if (off_) return;
  if (tty_) {
    auto now = Clock::now();
    if (!force && now - last_draw_ < std::chrono::milliseconds(100)) return;  // ~10 redraws/s at most
    last_draw_ = now;
    std::string line = status_line();
    size_t w = line.size();
    if (w < last_width_) line += std::string(last_width_ - w, ' ');  // wipe a longer previous line
    last_width_ = w;
    std::fprintf(out_, "\r%s", line.c_str());
  } else {
    // One line per 10% (deciles), and the start; unknown totals print nothing until finish().
    if (total_ <= 0) return;
    int decile = int(std::min<int64_t>(10, done_ * 10 / total_));
    if (decile == last_decile_) return;
    last_decile_ = decile;
    std::fprintf(out_, "%s\n", status_line().c_str());
  }
  std::fflush(out_);
}

void Progress::update(int64_t done) {
  if (finished_) return;
  done_ = total_ > 0 ? std::min(done, total_) : done;
  draw(false);
}

void Progress::finish() { end(false); }

void Progress::end(bool stopped) {
  if (finished_) return;
  finished_ = true;
  if (off_) return;
  double t = elapsed();
  char buf[128];
  std::snprintf(buf, sizeof buf, "%lld", (long long)done_);
  std::string s = label_ + (stopped ? ": stopped at " : ": ") + buf;
  if (total_ > 0) s += "/" + std::to_string(total_);
  std::snprintf(buf, sizeof buf, " %s %s (%.1f %s/s)", stopped ? "after" : "in", format_duration(t).c_str(),
                t > 0 ? double(done_) / t : 0.0, unit_.c_str());
  s += buf;
  if (!note_.empty()) s += "  " + note_;
  if (tty_) {
    if (s.size() < last_width_) s += std::string(last_width_ - s.size(), ' ');
    std::fprintf(out_, "\r%s\n", s.c_str());
  } else {
    std::fprintf(out_, "%s\n", s.c_str());
  }
  std::fflush(out_);
}

}  // namespace nimbus
