// child.h: waiting for a forked child with a deadline. A child that hangs (a deadlock in a signal
// handler, a lock inherited in the fork) is killed and reported after `seconds`, instead of holding
// the test until ctest's 600 s timeout.
#pragma once
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

namespace nimbus::test {

// waitpid(child) for at most `seconds`: the child's status, or, when it has not ended by then, the
// status of killing it with SIGKILL (and a failed check saying so).
inline int wait_child(pid_t child, double seconds = 60) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(child, &status, WNOHANG);
    if (r == child) return status;
    REQUIRE_MESSAGE(r == 0, "waitpid failed for child ", child);
    if (std::chrono::steady_clock::now() >= end) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(child, SIGKILL);
  ::waitpid(child, &status, 0);
  FAIL_CHECK("the child process ", child, " did not end within ", seconds, " s: killed");
  return status;
}

}  // namespace nimbus::test
