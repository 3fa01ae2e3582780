// fuzz_eurosat_split.cpp: libFuzzer entry for the eurosat_split target (fuzz/targets.h).
#include "fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nimbus::fuzz::eurosat_split(data, size);
  return 0;
}
