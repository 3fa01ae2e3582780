// fuzz_raster_pack.cpp: libFuzzer entry for the raster pack target (fuzz/targets.h).
#include "fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nimbus::fuzz::raster_pack(data, size);
  return 0;
}
