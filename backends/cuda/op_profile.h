/* op_profile.h: where a CUDA training step spends its device time, op by op (op_profile.cu).
 *
 * nsys does not run on our GPU machines, so the breakdown comes from CUDA events: while a profile
 * is open, every engine op (each backend(device, "name") lookup, engine/backend.h) records an event on the
 * current stream, and the device time between one op's event and the next is charged to that op.
 * That includes whatever the engine queued in between (gradient fills and accumulations, copies),
 * and device idle time while the host is behind: when the GPU waits for the host, the op that was
 * running on the host is charged with the gap. Under the emulator events read 0 ms, so only the
 * call counts mean something there.
 */
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace nimbus::cuda {

struct OpTime {
  std::string op;     // the engine's op name: "conv2d", "batch_norm2d", "adam", ...
  double ms = 0;      // device time charged to it
  int64_t calls = 0;  // how many times it was entered
};

void start_op_profile();              // Error if one is open or no backend is registered
std::vector<OpTime> stop_op_profile();  // waits for the device; largest time first

}  // namespace nimbus::cuda
