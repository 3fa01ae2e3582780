// test_progress.cpp: the progress bar's pieces and its two output modes, captured in a temp file.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include "apps/common/progress.h"

using namespace nimbus;

namespace {
std::string read_all(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  return s;
}
std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string l;
  while (std::getline(ss, l)) out.push_back(l);
  return out;
}
}  // namespace

TEST_CASE("progress: durations and bars") {
  CHECK(format_duration(0) == "0:00");
  CHECK(format_duration(7.4) == "0:07");
  CHECK(format_duration(723) == "12:03");
  CHECK(format_duration(3723) == "1:02:03");
  CHECK(format_duration(-1) == "?");
  CHECK(format_duration(INFINITY) == "?");
  CHECK(progress_bar(0, 10, 10) == "[..........]");
  CHECK(progress_bar(3, 10, 10) == "[###.......]");
  CHECK(progress_bar(10, 10, 10) == "[##########]");
  CHECK(progress_bar(15, 10, 4) == "[####]");  // clamped
}

TEST_CASE("progress: line mode prints every 10% and a final line") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f);
  {
    Progress p("infer", 200, f, Progress::Mode::Lines, "img");
    for (int i = 0; i < 200; ++i) p.advance();
    p.set_note("acc 0.9");
  }  // destructor finishes
  auto ls = lines(read_all(f));
  std::fclose(f);
  REQUIRE(ls.size() == 12);  // 0%, 10%, ..., 100%, final
  CHECK(ls[0].find("infer  [....................]  0/200") == 0);
  CHECK(ls[1].find("[##..................]  20/200") != std::string::npos);
  CHECK(ls[5].find("100/200") != std::string::npos);
  CHECK(ls[10].find("[####################]  200/200") != std::string::npos);
  CHECK(ls[1].find("img/s") != std::string::npos);
  CHECK(ls[1].find(" left ") != std::string::npos);
  CHECK(ls[11].find("infer: 200/200 in 0:00 (") == 0);
  CHECK(ls[11].find("acc 0.9") != std::string::npos);
  for (auto& l : ls) CHECK(l.find('\r') == std::string::npos);
}

TEST_CASE("progress: tty mode redraws in place, throttled to ~10/s") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f);
  Progress p("train", 1000, f, Progress::Mode::Tty);
  for (int i = 0; i < 1000; ++i) p.advance();  // far faster than 100 ms: no redraw after the first
  std::this_thread::sleep_for(std::chrono::milliseconds(120));
  p.update(1000);
  p.finish();
  p.finish();  // idempotent
  std::string s = read_all(f);
  std::fclose(f);
  int redraws = 0;
  for (char c : s) redraws += c == '\r';
  // Initial draw, one after the pause, the final line (one more if this process was descheduled >100 ms).
  CHECK(redraws >= 3);
  CHECK(redraws <= 4);
  CHECK(s.find("\rtrain  [####################]  1000/1000") != std::string::npos);
  CHECK(s.find("\rtrain: 1000/1000 in 0:00") != std::string::npos);
  CHECK(s.back() == '\n');
}

TEST_CASE("progress: unknown total prints counts only") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f);
  {
    Progress p("scan", 0, f, Progress::Mode::Lines);
    p.advance(5);
  }
  auto ls = lines(read_all(f));
  std::fclose(f);
  REQUIRE(ls.size() == 1);
  CHECK(ls[0].find("scan: 5 in ") == 0);
}

TEST_CASE("progress: silent when off, and in Auto mode on every rank of mpirun but rank 0") {
  auto printed = [](Progress::Mode mode) {
    std::FILE* f = std::tmpfile();
    REQUIRE(f);
    {
      Progress p("train", 10, f, mode);
      for (int i = 0; i < 10; ++i) p.advance();
    }
    const std::string s = read_all(f);
    std::fclose(f);
    return s;
  };
  CHECK(printed(Progress::Mode::Off).empty());
  CHECK(!printed(Progress::Mode::Auto).empty());  // a temp file: Auto prints lines
  ::setenv("OMPI_COMM_WORLD_RANK", "1", 1);
  const std::string rank1 = printed(Progress::Mode::Auto), forced = printed(Progress::Mode::Lines);
  ::setenv("OMPI_COMM_WORLD_RANK", "0", 1);
  const std::string rank0 = printed(Progress::Mode::Auto);
  ::unsetenv("OMPI_COMM_WORLD_RANK");
  CHECK(rank1.empty());
  CHECK(!forced.empty());  // an explicit mode still prints
  CHECK(!rank0.empty());
}

TEST_CASE("progress: a bar an error destroys says it stopped, not that it finished") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f);
  try {
    Progress p("classify", 8, f, Progress::Mode::Lines, "img");
    p.update(3);
    throw std::runtime_error("a bad file");
  } catch (const std::runtime_error&) {
  }
  {
    Progress ok("classify", 8, f, Progress::Mode::Lines, "img");
    ok.update(8);
  }
  auto ls = lines(read_all(f));
  std::fclose(f);
  REQUIRE(ls.size() >= 2);
  bool stopped = false, finished = false;
  for (const std::string& l : ls) {
    stopped = stopped || l.find("classify: stopped at 3/8 after 0:0") == 0;
    finished = finished || l.find("classify: 8/8 in 0:0") == 0;
  }
  CHECK_MESSAGE(stopped, ls.front());
  CHECK(finished);
}
