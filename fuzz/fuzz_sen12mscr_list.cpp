// fuzz_sen12mscr_list.cpp: libFuzzer entry for the sen12mscr_list target (fuzz/targets.h).
#include "fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nimbus::fuzz::sen12mscr_list(data, size);
  return 0;
}
